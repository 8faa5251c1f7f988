"""Lineage of a run: git commit and dirty flag, data hashes from dvc.lock, package versions."""

import subprocess
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "scikit-learn", "dvc", "dvclive")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def git_state() -> dict:
    """Return {"commit", "dirty"}; dirty ignores dvc.lock, which a running repro rewrites."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = [line for line in (status or "").splitlines() if not line.endswith("dvc.lock")]
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(changed) if status is not None else None,
    }


def data_hashes(dataset: str, lock_file: Path = Path("dvc.lock")) -> dict:
    """Return the md5 of the raw and normalized data of `dataset`, as dvc.lock records them."""
    if not lock_file.exists():
        return {}
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    hashes = {}
    for entry in stages.get(f"normalize@{dataset}", {}).get("deps", []):
        if entry["path"].startswith("datasets/raw"):
            hashes[entry["path"]] = entry.get("md5")
    for stage in (f"normalize@{dataset}", f"decode@{dataset}"):
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
