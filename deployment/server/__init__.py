"""The prediction server. It runs from an export bundle and imports nothing else from the repo:
preprocessing and the model come from the bundle's own code/ (bundle.py)."""
