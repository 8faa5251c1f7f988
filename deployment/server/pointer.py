"""The production pointer, deployment/production.json: which bundle is in production.

The release stages write it (deployment/release/production.py); the server reads it here at
start and on every change (reload.py). Paths in it are relative to the repo root, the
parent of the pointer's folder.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

PATH = Path("deployment/production.json")


class PointerError(ValueError):
    """The file is not a production pointer (unreadable JSON, no "bundle")."""


@dataclass(frozen=True)
class Pointer:
    path: Path  # the pointer file
    bundle: Path  # absolute
    sha256: str | None  # of bundle/model.keras; None: not checked
    eval_samples: Path | None  # bundle/eval/samples.json: the self-check's images
    data: dict = field(repr=False)  # the whole pointer (history, rejected, metrics, ...)


def read(path: Path = PATH) -> Pointer | None:
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
    root = path.resolve().parents[1]
    samples = data.get("eval_samples")
    return Pointer(
        path=path,
        bundle=root / data["bundle"],  # an absolute "bundle" stays as it is
        sha256=data.get("sha256"),
        eval_samples=root / samples if isinstance(samples, str) else None,
        data=data,
    )
