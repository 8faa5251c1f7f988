"""Shared fixtures: tiny generated datasets in the seed folder format, and stage runners."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("bar", "column", "diagonal")


def pattern(label: int, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """A noisy 8x8 uint8 image whose stroke depends on the class: easy to learn."""
    img = rng.integers(0, 40, (size, size)).astype(np.uint8)
    pos = int(rng.integers(1, size - 1))
    if label == 0:
        img[pos, :] = 255
    elif label == 1:
        img[:, pos] = 255
    else:
        np.fill_diagonal(img, 255)
    return img


def write_seed_dataset(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write train/ and test/ with PNGs and groundtruth.csv; return root."""
    per_class = per_class or {"train": 8, "test": 4}
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        with (root / split / "groundtruth.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", "label"])
            for label, name in enumerate(CLASSES):
                for i in range(n):
                    file = f"{name}_{i:03d}.png"
                    Image.fromarray(pattern(label, rng), "L").save(root / split / file)
                    writer.writerow([file, name])
    return root


@pytest.fixture
def seed_dataset(tmp_path: Path) -> Path:
    return write_seed_dataset(tmp_path / "raw" / "tiny")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory holding a copy of the project's params.yaml."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return work


def edit_params(path: Path, **sections) -> None:
    """Merge sections into a params.yaml (a None value deletes the key)."""
    data = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_stage(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m module args` in cwd, as dvc would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
