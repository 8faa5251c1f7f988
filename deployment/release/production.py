"""A dataset's local production pointer and the promoted bundle folders beside it.

    deployment/<dataset>/production.json   the pointer: what is in production (written by
                                           select, rollback); the server watches it
    deployment/<dataset>/production/       a copy of the promoted bundle, with
                                           eval/samples.json (test files and their evaluated
                                           probabilities: the self-check); the registry
                                           artifact <dataset>-classifier in dvc.yaml
    deployment/<dataset>/previous/         the bundle in production before it (rollback)

The pointer holds name (the cell), version (sha256[:12] of model.keras), sha256, bundle
(deployment/<dataset>/production), dataset/model/hparams, test metrics, promoted_at and reason,
plus `history` (earlier productions, newest first) and `rejected` (sha256 of versions rolled
back: select never promotes them again). Every write is atomic: the folders are renamed
into place and the pointer is written through a temporary file; the pointer is written
last, so a reader that follows it finds its bundle complete.
"""

import shutil
import time
from pathlib import Path

from data_processing.core.io import write_json
from deployment.server import pointer as server_pointer
from deployment.server.bundle import file_sha256

HISTORY = 10  # earlier productions kept in the pointer
IDENTITY = ("name", "version", "sha256", "dataset", "model", "hparams", "metrics", "promoted_at")


def folders(pointer: Path) -> tuple[Path, Path]:
    """(production, previous) bundle folders beside the pointer file."""
    return pointer.with_suffix(""), pointer.parent / "previous"


def read(pointer: Path) -> dict | None:
    """The pointer's content (deployment.server.pointer parses it), or None when there is
    no pointer yet."""
    found = server_pointer.read(pointer)
    return found.data if found else None


def identity(entry: dict) -> dict:
    """The part of a pointer kept in `history`."""
    return {k: entry[k] for k in IDENTITY if k in entry}


def bundle_sha256(folder: Path) -> str | None:
    """sha256 of folder/model.keras, None when there is none."""
    model = folder / "model.keras"
    return file_sha256(model) if model.is_file() else None


def install(pointer: Path, bundle: Path, samples: Path, entry: dict, reason: str) -> dict:
    """Copy `bundle` (and its eval samples.json) into production, move the old production to
    previous, then write the pointer for `entry` with the old one pushed onto its history."""
    production, previous = folders(pointer)
    old = read(pointer)
    staging = production.with_name(production.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    (staging / "eval").mkdir()
    shutil.copy2(samples, staging / "eval" / "samples.json")
    if production.exists():
        shutil.rmtree(previous, ignore_errors=True)
        production.rename(previous)
    staging.rename(production)
    history = ([identity(old)] + old.get("history", [])) if old else []
    return _write(pointer, entry, reason, history, old.get("rejected", []) if old else [])


def restore(pointer: Path, bundle: Path, samples: Path) -> None:
    """Copy `bundle` (and its eval samples.json) into the pointer's production folder, which
    is missing or holds another model; the pointer stays as it is."""
    production, _ = folders(pointer)
    staging = production.with_name(production.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    (staging / "eval").mkdir()
    shutil.copy2(samples, staging / "eval" / "samples.json")
    shutil.rmtree(production, ignore_errors=True)
    staging.rename(production)


def refresh(pointer: Path, bundle: Path, samples: Path) -> bool:
    """Re-copy production's own model from its re-exported `bundle` when the bundle's files
    differ (a newer export of the same model.keras adds files: calibration, explanations,
    the OOD statistics); the pointer, its version and previous/ stay. True when copied."""
    production, _ = folders(pointer)
    if bundle_sha256(bundle) != bundle_sha256(production) or _same_files(bundle, production):
        return False
    staging = production.with_name(production.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    (staging / "eval").mkdir()
    shutil.copy2(samples, staging / "eval" / "samples.json")
    old = production.with_name(production.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    production.rename(old)
    staging.rename(production)  # a reader of the pointer finds one whole folder or the other
    shutil.rmtree(old)
    return True


def _same_files(bundle: Path, production: Path) -> bool:
    """The bundle's files are production's (eval/ aside), by path, size and bytes."""
    ours = {p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file()}
    theirs = {
        p.relative_to(production)
        for p in production.rglob("*")
        if p.is_file() and p.relative_to(production).parts[0] != "eval"
    }
    return ours == theirs and all(
        (bundle / f).read_bytes() == (production / f).read_bytes() for f in ours
    )


def swap_back(pointer: Path, artifact: str = "<dataset>-classifier") -> dict:
    """Roll back: previous becomes production again, and the current version is rejected.

    Raises:
        ValueError: no earlier production, or deployment/previous does not hold it.
    """
    production, previous = folders(pointer)
    current = read(pointer)
    if not current or not current.get("history"):
        raise ValueError(f"{pointer}: no earlier production to roll back to")
    target = current["history"][0]
    found = bundle_sha256(previous)
    if found != target["sha256"]:
        raise ValueError(
            f"{previous}: expected the bundle of {target['name']} version {target['version']}"
            f" (model.keras sha256 {target['sha256'][:12]}), found "
            f"{'no bundle' if found is None else found[:12]}; fetch it from the registry: "
            f"dvc artifacts get . {artifact} --version <v> -o {previous}"
        )
    swap = production.with_name(production.name + ".swap")
    shutil.rmtree(swap, ignore_errors=True)
    previous.rename(swap)
    production.rename(previous)
    swap.rename(production)
    rejected = (set(current.get("rejected", [])) | {current["sha256"]}) - {target["sha256"]}
    reason = f"rollback from {current['name']} version {current['version']}"
    history = [identity(current)] + current["history"][1:]
    return _write(pointer, target, reason, history, sorted(rejected))


def _write(pointer: Path, entry: dict, reason: str, history: list, rejected: list) -> dict:
    """Write the pointer for `entry`, now in the production folder; return its content."""
    production = folders(pointer)[0]
    data = {
        **identity(entry),
        "bundle": production.as_posix(),
        "eval_samples": (production / "eval" / "samples.json").as_posix(),
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reason": reason,
        "history": history[:HISTORY],
        "rejected": rejected,
    }
    write_json(pointer, data)
    return data
