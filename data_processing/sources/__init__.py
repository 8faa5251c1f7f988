"""Importer registry: one module per source format, each with `parse(raw_dir, name)`.

The module name is the key (`seed` -> data_processing/sources/seed.py).
"""

import importlib
import pkgutil
from types import ModuleType

from data_processing.schema import Dataset

Splits = dict[str, Dataset]  # split name ("train", "test") -> one split


def available() -> list[str]:
    """Return the names of every importer."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """Return the importer module `name`; ValueError listing the valid names otherwise."""
    if name not in available():
        raise ValueError(f"unknown source format {name!r}; choose from {available()}")
    return importlib.import_module(f"{__name__}.{name}")
