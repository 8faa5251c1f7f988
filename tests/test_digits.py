"""The digits stage: the UCI digits from scikit-learn, written in the seed folder format as
the default dataset, stratified, seeded and byte-for-byte reproducible."""

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, run_stage
from PIL import Image
from sklearn.datasets import load_digits

from data_processing import sources


def _write(project: Path, seed: int, test_fraction: float = 0.25) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"]["seed"], params["digits"]["test_fraction"] = seed, test_fraction
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage("data_processing.digits", "datasets/raw/digits", cwd=project)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 1347 train and 450 test images" in proc.stdout
    return project / "datasets/raw/digits"


def _rows(raw: Path, split: str) -> list[tuple[str, str]]:
    with open(raw / split / "groundtruth.csv", newline="") as f:
        return [tuple(row) for row in csv.reader(f)][1:]


def _digests(raw: Path) -> dict[str, str]:
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    return {str(p.relative_to(raw)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("digits") / "a", seed=42)


def test_every_digit_once_with_its_label_and_pixels(raw: Path) -> None:
    data = load_digits()
    seen = {}
    for split in ("train", "test"):
        for name, label in _rows(raw, split):
            index = int(name.removeprefix("digit_").removesuffix(".png"))
            with Image.open(raw / split / name) as image:
                assert (image.mode, image.size) == ("L", (8, 8))
                pixels = np.asarray(image)
            expected = np.round(data.images[index] * 255 / 16).astype(np.uint8)
            np.testing.assert_array_equal(pixels, expected)
            assert label == str(data.target[index])
            seen[index] = split
    assert sorted(seen) == list(range(1797))  # each image in exactly one split


def test_the_test_split_is_a_stratified_quarter(raw: Path) -> None:
    total = Counter(str(t) for t in load_digits().target)
    test = Counter(label for _, label in _rows(raw, "test"))
    assert sum(test.values()) == 450
    for label, n in total.items():
        assert abs(test[label] - n / 4) <= 1, label


def test_the_seed_importer_reads_it(raw: Path) -> None:
    splits = sources.get("seed").parse(raw)
    assert {s: len(d.images) for s, d in splits.items()} == {"train": 1347, "test": 450}
    assert [c.name for c in splits["train"].categories] == [str(d) for d in range(10)]


def test_same_seed_same_bytes_other_seed_other_split(raw: Path, tmp_path: Path) -> None:
    assert _digests(_write(tmp_path / "again", seed=42)) == _digests(raw)
    other = _write(tmp_path / "other", seed=7)
    assert _rows(other, "test") != _rows(raw, "test")
