"""Gate, deploy-test and serve exported bundles. Imports nothing from models/: only bundles."""
