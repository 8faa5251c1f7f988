"""Model registry: one module per architecture in models/architectures/, found by name.

Importing this package does not import TensorFlow; building a model does.
"""

import importlib
import pkgutil
from types import ModuleType

from models import architectures


def available() -> list[str]:
    """Return the names of every architecture (the module names)."""
    return sorted(
        m.name for m in pkgutil.iter_modules(architectures.__path__) if not m.name.startswith("_")
    )


def get(name: str) -> ModuleType:
    """Return the architecture module `name`; ValueError listing the valid names otherwise."""
    if name not in available():
        raise ValueError(f"unknown model {name!r}; choose from {available()}")
    from models.common.quiet import import_tensorflow

    import_tensorflow()
    return importlib.import_module(f"{architectures.__name__}.{name}")
