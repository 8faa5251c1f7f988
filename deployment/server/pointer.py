"""The production pointers, deployment/<dataset>/production.json: which bundle is in
production for each dataset.

The release stages write them (deployment/release/production.py); the server reads them here
at start and on every change (reload.py). Paths in a pointer are relative to the repo root,
the folder that holds deployment/.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

DEPLOYMENT = Path("deployment")
PATTERN = "*/production.json"  # under DEPLOYMENT: one pointer per dataset


def of(dataset: str, deployment: Path = DEPLOYMENT) -> Path:
    """The production pointer of `dataset`."""
    return Path(deployment) / dataset / "production.json"


def every(deployment: Path = DEPLOYMENT) -> list[Path]:
    """Every dataset's production pointer under `deployment`, by dataset name."""
    return sorted(Path(deployment).glob(PATTERN))


def _root(path: Path) -> Path:
    """The repo root of a pointer: the folder that holds its deployment/ folder."""
    resolved = path.resolve()
    for parent in resolved.parents:
        if parent.name == DEPLOYMENT.name:
            return parent.parent
    return resolved.parents[1]


class PointerError(ValueError):
    """The file is not a production pointer (unreadable JSON, no "bundle")."""


@dataclass(frozen=True)
class Pointer:
    path: Path  # the pointer file
    bundle: Path  # absolute
    sha256: str | None  # of bundle/model.keras; None: not checked
    eval_samples: Path | None  # bundle/eval/samples.json: the self-check's images
    data: dict = field(repr=False)  # the whole pointer (history, rejected, metrics, ...)


def read(path: Path) -> Pointer | None:
    """The pointer at `path`; None when there is none yet.

    Raises:
        PointerError: it exists but is not a pointer.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise PointerError(f"{path}: not a production pointer: {err!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("bundle"), str):
        raise PointerError(f'{path}: not a production pointer: no "bundle"')
    root = _root(path)
    samples = data.get("eval_samples")
    return Pointer(
        path=path,
        bundle=root / data["bundle"],  # an absolute "bundle" stays as it is
        sha256=data.get("sha256"),
        eval_samples=root / samples if isinstance(samples, str) else None,
        data=data,
    )
