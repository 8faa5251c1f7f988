"""Importer registry: one module per source format, each with `parse(raw_dir, name)`.

The module name is the key (`seed` -> data_processing/sources/seed.py). Each module also has
`matches(raw_dir) -> str | None` (None: "looks like me", else why not), which `detect` uses.
Modules starting with "_" are helpers, not formats.
"""

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from data_processing.core.errors import DataError
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


def detect(raw_dir: Path) -> str:
    """Return the one source format whose `matches` accepts `raw_dir`.

    Args:
        raw_dir: a dataset folder.

    Returns:
        The importer name.

    Raises:
        DataError: no format matched (listing each one's reason) or several did ("ambiguous").
    """
    reasons = {name: get(name).matches(Path(raw_dir)) for name in available()}
    hits = [name for name, reason in reasons.items() if reason is None]
    if len(hits) == 1:
        return hits[0]
    hint = "name the format in params.yaml normalize.formats"
    if not hits:
        found = "no format matched: " + "; ".join(f"{n}: {r}" for n, r in reasons.items())
        raise DataError(raw_dir, "a folder in one known source format", found=found, hint=hint)
    raise DataError(
        raw_dir, "exactly one matching source format", found=f"ambiguous: {hits} match", hint=hint
    )
