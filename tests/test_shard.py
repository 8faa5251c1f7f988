"""The shard stage: one set of pixels for training, evaluation and serving; same bytes twice;
clear errors; a streamed reader that reads every record once and splits val by index."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, edit_params, run_stage
from PIL import Image

from data_processing.images import shrink
from models.common.data import Shards, split_train_val
from models.common.serving import Predictor

SIZE = (24, 20)  # (height, width) stored


def _photo(rng: np.random.Generator, width: int, height: int, label: int) -> np.ndarray:
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    img[:, : width * (label + 1) // 3] += 150  # a wide band: the class
    return img


def _save(rng: np.random.Generator, path: Path, label: int, kind: str) -> None:
    """One file of `kind`: the modes and encodings real photo folders hold."""
    width, height = {"tiny": (32, 32), "big": (1200, 900)}.get(kind, (160, 120))
    im = Image.fromarray(_photo(rng, width, height, label))
    if kind == "exif":  # stored sideways; Orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        im.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", exif=exif)
    elif kind == "cmyk":
        im.convert("CMYK").save(path, "JPEG")
    elif kind == "gray16":
        arr = np.asarray(im.convert("L"), np.uint16) * 257
        Image.fromarray(arr).save(path)  # mode I;16
    elif kind in ("L", "RGBA", "P"):
        im.convert(kind).save(path)
    else:
        im.save(path, "JPEG", quality=90)


KINDS = ["rgb", "exif", "cmyk", "gray16", "L", "RGBA", "P", "tiny", "big"]


def write_mixed(root: Path, per_split: dict[str, int], seed: int = 0) -> None:
    """A seed-format dataset of 3 classes cycling through every kind of file."""
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            ext = ".jpg" if kind in ("rgb", "exif", "cmyk", "tiny", "big") else ".png"
            name = f"{split}/{i:03d}_{kind}{ext}"
            _save(rng, root / name, i % 3, kind)
            rows.append(f"{Path(name).name},{'abc'[i % 3]}")
        (root / split / "groundtruth.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with the mixed dataset normalized and sharded at SIZE."""
    project = tmp_path_factory.mktemp("shard")
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    edit_params(
        project / "params.yaml",
        datasets=["mixed"],
        train={"image_size": list(SIZE)},
        shard={"n_samples": 5, "shard_mb": 0.02, "workers": 2},
    )
    write_mixed(project / "datasets/raw/mixed", {"train": 36, "test": 18})
    raw, norm = "datasets/raw/mixed", "datasets/normalized/mixed"
    for module, *args in (
        ("data_processing.normalize", raw, norm),
        ("data_processing.shard", raw, norm, "datasets/shards/mixed"),
    ):
        proc = run_stage(module, *args, cwd=project)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return project


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_stored_pixels_are_what_serving_prepares(sharded: Path) -> None:
    shards = Shards.open(sharded / "datasets/shards/mixed")
    assert shards.channels == 3 and shards.image_size == SIZE
    predictor = Predictor([], 3, SIZE)  # prepare: what the server does with uploaded bytes
    for split in ("train", "test"):
        names = shards.file_names(split)
        stored = shards.images(split, range(len(names)))
        for name, pixels in zip(names, stored, strict=True):
            data = (sharded / "datasets/raw/mixed" / name).read_bytes()
            assert np.array_equal(predictor.prepare(data), pixels), name


def test_exif_rotated_photo_is_stored_upright(sharded: Path) -> None:
    shards = Shards.open(sharded / "datasets/shards/mixed")
    names = shards.file_names("train")
    row = next(i for i, n in enumerate(names) if "exif" in n)
    path = sharded / "datasets/raw/mixed" / names[row]
    with Image.open(path) as im:
        upright = np.asarray(
            im.transpose(Image.Transpose.ROTATE_270).resize(SIZE[::-1], Image.BILINEAR)
        )
    assert np.abs(shards.images("train", [row])[0].astype(int) - upright).mean() < 8


def test_draft_decoding_never_goes_below_the_target() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2000, 3000, 3), np.uint8)).save(buf, "JPEG")
    with Image.open(buf) as im:
        assert shrink(im, 3, (96, 96)).shape == (96, 96, 3)
    with Image.open(buf) as im:
        im.draft("RGB", (96, 96))
        assert im.size == (375, 250)  # libjpeg scaled by 1/8, still >= the target


def test_same_data_gives_the_same_shards_byte_for_byte(sharded: Path) -> None:
    again = sharded / "again"
    proc = run_stage(
        "data_processing.shard",
        "datasets/raw/mixed",
        "datasets/normalized/mixed",
        str(again),
        cwd=sharded,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = _digests(sharded / "datasets/shards/mixed")
    assert first == _digests(again)
    assert len([n for n in first if n.endswith(".rec")]) > 2  # 20 kB shards: several files


def test_a_broken_image_fails_the_stage_naming_it(sharded: Path) -> None:
    raw = sharded / "datasets/raw/mixed"
    victim = raw / "test/001_exif.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated
    try:
        proc = run_stage(
            "data_processing.shard",
            str(raw),
            "datasets/normalized/mixed",
            "datasets/shards/broken",
            cwd=sharded,
        )
    finally:
        victim.write_bytes(data)
    assert proc.returncode == 2
    assert "test/001_exif.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert not (sharded / "datasets/shards/broken").exists()
    assert not list((sharded / "datasets/shards").glob(".broken*"))  # no half-written folder


def test_stream_reads_every_record_once_and_val_by_index(sharded: Path) -> None:
    shards = Shards.open(sharded / "datasets/shards/mixed")
    val = split_train_val(shards, 0.25, seed=0)
    assert val.sum() == 9  # a quarter of 36, stratified
    seen = []
    for index, images, targets in shards.dataset("train", 8, ~val, 0, 16, with_index=True):
        assert images.shape[1:] == (*SIZE, 3) and images.dtype == np.uint8
        truth = shards.targets(shards.labels("train")[index.numpy()])
        assert np.array_equal(targets.numpy(), truth)
        seen += index.numpy().tolist()
    assert sorted(seen) == np.flatnonzero(~val).tolist()  # each kept record exactly once
    assert seen != sorted(seen)  # shuffled
    again = [i for b in shards.dataset("train", 8, ~val, 0, 16, with_index=True) for i in b[0]]
    assert [int(i) for i in again] == seen  # the same seed, the same order
    val_seen = [int(i) for b in shards.dataset("train", 8, val, with_index=True) for i in b[0]]
    assert val_seen == np.flatnonzero(val).tolist()  # in record order
    small = shards.dataset("train", 8, val, with_index=True, cache_bytes=1 << 30)  # one array
    assert [int(i) for b in small for i in b[0]] == val_seen
