"""The shared core: params, errors, atomic writes and command lines. Every package may import
it; it imports nothing else from the repo (import-linter contract in pyproject.toml)."""
