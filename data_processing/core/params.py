"""Read one section of params.yaml into a typed, strict pydantic model.

Unknown keys and values of the wrong type raise DataError naming `params.yaml` and the field,
like nanoGPT's configurator rejects unknown keys and type changes.
"""

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from data_processing.core.errors import DataError

PARAMS_FILE = Path("params.yaml")


class Params(BaseModel):
    """Base for every params section: frozen, strict types, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


P = TypeVar("P", bound=Params)


class BaseParams(Params):
    """The `base` section, shared by every stage."""

    seed: int = 42  # seeds splits, weight init, shuffling and sampling


def read_params(path: Path = PARAMS_FILE) -> dict:
    """Return the whole params file as a dict (DataError when missing or not a mapping)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "a params file (run from the project root)") from None
    except yaml.YAMLError as err:
        raise DataError(path, "valid YAML", found=str(err).replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise DataError(path, "a mapping of sections", found=type(data).__name__)
    return data


def parse_params(data: object, cls: type[P], section: str, path: Path = PARAMS_FILE) -> P:
    """Validate `data` as `cls`; errors name the file and the dotted field."""
    try:
        return cls.model_validate(data if data is not None else {})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join([section, *(str(p) for p in first["loc"])])
        found = repr(first.get("input")) if first["type"] != "missing" else "nothing"
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(cls.model_fields))
            raise DataError(
                path,
                "a known key",
                field=field,
                found="an unknown key",
                hint=f"known keys of {section!r}: {known}",
            ) from None
        raise DataError(path, first["msg"].lower(), field=field, found=found) from None


def load_params(section: str, cls: type[P], path: Path = PARAMS_FILE) -> P:
    """Load `params.yaml` section `section` (dots walk into nested sections) as `cls`.

    Args:
        section: e.g. "train" or "models.cnn".
        cls: the Params subclass describing that section.
        path: the params file.

    Returns:
        The validated, frozen params.
    """
    data: object = read_params(path)
    for key in section.split("."):
        if not isinstance(data, dict) or key not in data:
            raise DataError(path, f"a section {section!r}", field=section, found="none")
        data = data[key]
    return parse_params(data, cls, section, path)


def name_clashes(grid: dict) -> list[tuple[str, str]]:
    """Pairs of a dataset and a cell (<dataset>-<model>-<hparams>) of params.yaml's grid
    that share a name: the server serves each dataset's model by the dataset's name and by
    its cell's, so one name must never mean two models."""
    datasets = list(grid.get("datasets") or [])
    cells = {
        f"{d}-{m}-{h}": d
        for d in datasets
        for m in grid.get("models") or {}
        for h in grid.get("hparams") or {}
    }
    return [(name, cells[name]) for name in datasets if name in cells]
