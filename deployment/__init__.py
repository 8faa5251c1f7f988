"""Serving (server/) and releasing (release/) exported bundles. Imports nothing from models/."""
