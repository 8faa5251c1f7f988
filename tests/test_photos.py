"""The photo dataset generator (tests/photos.py): modes, upright EXIF images, the normalize
stage, determinism. A few seconds."""

import csv
import json
from pathlib import Path

import numpy as np
import photos
import pytest
from conftest import edit_params, run_stage
from PIL import Image, ImageOps

N = 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("photos") / "p"
    return root, photos.write_photo_dataset(root, N, seed=3)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def opened(root: Path) -> dict[str, tuple[str, int, bool, tuple[int, int]]]:
    """file_name -> (stored mode, EXIF orientation, transparency, upright (width, height))."""
    found = {}
    for path in sorted(root.glob("*/*.*")):
        if path.suffix == ".csv":
            continue
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            upright = ImageOps.exif_transpose(im).size
            found[path.relative_to(root).as_posix()] = (
                im.mode,
                orientation,
                "transparency" in im.info,
                upright,
            )
    return found


def test_every_mode_appears(dataset):
    root, summary = dataset
    found = opened(root)
    assert len(found) == N == summary["images"]
    modes = {mode for mode, *_ in found.values()}
    assert modes == {"RGB", "L", "RGBA", "P", "CMYK", "I;16"}
    assert summary["modes"] == {m: sum(v[0] == m for v in found.values()) for m in sorted(modes)}
    assert {o for _, o, *_ in found.values()} == {1, 3, 6, 8}
    assert summary["rotated"] == sum(o != 1 for _, o, *_ in found.values())
    palettes = [t for mode, _, t, _ in found.values() if mode == "P"]
    assert any(palettes) and not all(palettes)  # with and without a transparent index
    jpegs = [name for name in found if name.endswith(".jpg")]
    assert len(jpegs) > 0.7 * N  # mostly JPEG
    assert sum(1 for *_, size in found.values() if min(size) == photos.TINY_SIDE) >= 2


def test_groundtruth_is_stratified_seed_format(dataset):
    root, summary = dataset
    per_class = {}
    for split in ("train", "test"):
        with (root / split / "groundtruth.csv").open(newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["filename", "label"]
        names = [name for name, _ in rows[1:]]
        assert sorted(names) == sorted(p.name for p in (root / split).glob("c*_*.*"))
        assert all(
            name.isascii() and name.startswith(f"c{photos.CLASS_NAMES.index(label)}_")
            for name, label in rows[1:]
        )
        per_class[split] = {
            c: sum(label == c for _, label in rows[1:]) for c in photos.CLASS_NAMES
        }
    assert summary["per_class"] == per_class
    assert set(per_class["train"].values()) == {10} and set(per_class["test"].values()) == {2}


def test_normalize_accepts_and_records_upright_sizes(dataset, project: Path):
    root, _ = dataset
    raw = project / "datasets/raw/p"
    raw.parent.mkdir(parents=True)
    raw.symlink_to(root, target_is_directory=True)
    edit_params(project / "params.yaml", datasets=["p"])
    proc = run_stage(
        "data_processing.normalize", "datasets/raw/p", "datasets/normalized/p", cwd=project
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = {}
    for split in ("train", "test"):
        data = json.loads((project / f"datasets/normalized/p/{split}.json").read_text())
        assert data["info"]["label_mode"] == "single"
        recorded |= {im["file_name"]: (im["width"], im["height"]) for im in data["images"]}
    found = opened(root)
    assert recorded == {name: size for name, (*_, size) in found.items()}
    for name, (_, orientation, _, _) in found.items():
        with Image.open(root / name) as im:
            stored = im.size
        assert recorded[name] == (stored[::-1] if orientation in (6, 8) else stored), name


def test_rotated_images_come_out_upright(dataset):
    """exif_transpose of a stored image gives the picture as rendered, not a turned one."""
    root, _ = dataset
    checked = 0
    for spec in photos.plan(root, N, seed=3):
        if photos.KINDS[spec.kind][3] == 1:
            continue
        upright = photos.render(
            spec.label, spec.height, spec.width, np.random.default_rng([3, spec.index])
        )
        with Image.open(spec.path) as im:
            shown = np.asarray(ImageOps.exif_transpose(im), dtype=np.float32)
        expected = np.asarray(upright, dtype=np.float32)
        assert shown.shape == expected.shape
        error = np.abs(shown - expected).mean()
        wrong = np.abs(shown - expected[::-1, ::-1]).mean()  # half a turn off
        assert error < 12 < wrong, (spec, error, wrong)
        checked += 1
    assert checked >= 6


def test_same_bytes_from_the_same_seed(dataset, tmp_path: Path):
    root, summary = dataset
    again = photos.write_photo_dataset(tmp_path / "p", N, seed=3, workers=2)
    assert again == summary
    assert files(tmp_path / "p") == files(root)
    other = photos.write_photo_dataset(tmp_path / "q", N, seed=4)
    assert files(tmp_path / "q") != files(root) and other["splits"] == summary["splits"]
