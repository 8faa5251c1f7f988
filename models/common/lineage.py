"""Lineage of a bundle: its code's hash, data hashes from dvc.lock, package versions.

No git commit: the commit that holds a run's dvc.lock is made after the run, so a bundle
naming its commit could never be reproduced; `git log dvc.lock` finds it, and the registry's
tags (deployment/release/registry.py) name it for every promoted version."""

import hashlib
from importlib import metadata
from pathlib import Path

import yaml

from data_processing.core.params import read_params

PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "scikit-learn", "dvc", "dvclive")


def tree_sha256(folder: Path) -> str:
    """The sha256 of a folder's files: each relative path and its bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _tracked_md5(path: str, stages: dict) -> str | None:
    """The md5 DVC records for `path`: a stage output in dvc.lock, or a `dvc add`ed .dvc file."""
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry["path"] == path:
                return entry.get("md5")
    dvc_file = Path(path + ".dvc")
    if dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
        return outs[0].get("md5") if outs else None
    return None


def data_hashes(dataset: str, lock_file: Path = Path("dvc.lock")) -> dict:
    """Return the md5 of the raw data of `dataset` (and of the feedback merged into it, when
    tracked) and of its normalized data and shards, as DVC records them."""
    if not lock_file.exists():
        return {}
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    hashes = {}
    merged = read_params().get("feedback", {}).get("dataset") == dataset
    for raw in (f"datasets/raw/{dataset}", *(["datasets/raw/feedback"] if merged else [])):
        if md5 := _tracked_md5(raw, stages):
            hashes[raw] = md5
    for stage in (f"normalize@{dataset}", f"shard@{dataset}"):
        for entry in stages.get(stage, {}).get("outs", []):
            hashes[entry["path"]] = entry.get("md5")
    return hashes


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
