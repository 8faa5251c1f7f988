"""The validate stage's checks, each on a tiny generated dataset with boxes and masks.

Every broken case starts from one clean dataset (16x16 noise images, one box and one mask per
image, 2 classes) and breaks one thing; the check must fire and name the file or row.
The duplicate searches are also tested on hashes alone (`scan_of`), at sizes where comparing
all pairs would show: the near-duplicate index against a brute-force reference, and groups of
thousands of identical images.
"""

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_params, run_stage
from PIL import Image as PILImage
from pydantic import ValidationError

from data_processing import checks, duplicates, schema
from data_processing.records import Box, Record, assemble, category_list
from data_processing.validate import ValidateParams, validate

SIZE = 16  # px, every generated image is SIZE x SIZE
TRAIN = ["circle", "circle", "circle", "square", "square", "square"]
TEST = ["circle", "square", "circle", "square"]


def noise(seed: int) -> np.ndarray:
    """A random RGB image: two different seeds give far-apart perceptual hashes."""
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr).save(path)


def write_split(raw: Path, split: str, labels: list[str], seed: int) -> list[Record]:
    """Write images and masks (category id inside the box); return their records."""
    classes = sorted(set(TRAIN))
    records = []
    for i, label in enumerate(labels):
        file, mask_file = f"{split}/{label}_{i}.png", f"masks/{split}/{label}_{i}.png"
        save_png(raw / file, noise(seed * 1000 + i))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[4:10, 2:8] = classes.index(label) + 1 if label in classes else 0
        save_png(raw / mask_file, mask)
        box = Box(label, 2, 4, 6, 6)
        source = f"{split}/labels.csv:{i + 2}"
        records.append(Record(file, SIZE, SIZE, boxes=(box,), mask_file=mask_file, source=source))
    return records


def build(raw: Path, train: list[str] = TRAIN, test: list[str] = TEST) -> dict:
    """Write the dataset under raw; return {split: records}."""
    return {
        "train": write_split(raw, "train", train, 1),
        "test": write_split(raw, "test", test, 2),
    }


def assemble_all(records: dict[str, list[Record]]) -> dict[str, schema.Dataset]:
    categories = category_list(records)
    return {s: assemble("shapes", s, r, categories, "single", "test") for s, r in records.items()}


def run(raw: Path, records: dict, **params) -> dict:
    params = {"min_per_class": 3, **params}  # 3 images per class are enough here
    return validate(raw, assemble_all(records), ValidateParams(**params))


def set_box(records: dict, split: str, index: int, **box) -> None:
    record = records[split][index]
    boxes = (dataclasses.replace(record.boxes[0], **box),)
    records[split][index] = dataclasses.replace(record, boxes=boxes)


def has(messages: list[str], *needles: str) -> bool:
    return any(all(n in m for n in needles) for m in messages)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return tmp_path / "raw" / "shapes"


def test_clean_dataset_has_no_errors_and_full_stats(raw: Path) -> None:
    report = run(raw, build(raw))
    assert report["errors"] == [] and report["warnings"] == []
    train = report["splits"]["train"]
    assert train["images"] == 6 and train["boxes"] == 6
    assert train["class_counts"] == {"circle": 3, "square": 3}
    assert train["width"] == {"min": 16, "median": 16, "max": 16}
    assert train["sizes"] == {"16x16": 6} and train["modes"] == {"RGB": 6}
    assert report["leakage"]["exact"] == [] and report["leakage"]["near"] == []
    assert set(report["leakage"]["counts"].values()) == {0}


def test_exact_duplicate_across_splits_is_an_error(raw: Path) -> None:
    records = build(raw)
    train_file, test_file = raw / "train/circle_0.png", raw / "test/square_1.png"
    test_file.write_bytes(train_file.read_bytes())
    report = run(raw, records)
    assert has(
        report["errors"],
        "train/labels.csv:2 (train/circle_0.png)",
        "test/labels.csv:3 (test/square_1.png)",
        "identical pixels in train and test",
    ), report["errors"]
    assert len(report["errors"]) == 1 and "2 images: 1 in train, 1 in test" in report["errors"][0]
    assert report["leakage"]["exact"] == [
        {
            "images": 2,
            "splits": {"train": 1, "test": 1},
            "files": ["train/circle_0.png", "test/square_1.png"],
        }
    ]
    assert report["leakage"]["counts"] == {
        "exact_groups": 1,
        "exact_images": 2,
        "within_split_groups": 0,
        "within_split_images": 0,
        "near_pairs": 0,
        "near_hash_pairs": 0,
    }


def test_identical_group_across_splits_is_one_error_not_pairs(raw: Path) -> None:
    records = build(raw)
    original = (raw / "train/circle_0.png").read_bytes()
    copies = ["train/circle_1.png", "train/circle_2.png", "test/circle_0.png", "test/square_1.png"]
    for copy in copies:
        (raw / copy).write_bytes(original)
    report = run(raw, records)
    assert len(report["errors"]) == 1, report["errors"]  # one group, not 10 pairs
    assert report["errors"][0] == (
        "train/labels.csv:2 (train/circle_0.png), train/labels.csv:3 (train/circle_1.png), "
        "train/labels.csv:4 (train/circle_2.png), test/labels.csv:2 (test/circle_0.png) and 1 "
        "more: identical pixels in train and test (5 images: 3 in train, 2 in test; exact "
        "duplicate: train/test leakage); keep copies in one split only"
    )
    assert report["warnings"] == []  # the 3 train copies are part of the leak, not a warning
    leakage = report["leakage"]
    assert leakage["exact"] == [
        {
            "images": 5,
            "splits": {"train": 3, "test": 2},
            "files": ["train/circle_0.png", *copies],
        }
    ]
    assert leakage["counts"]["exact_groups"] == 1 and leakage["counts"]["exact_images"] == 5
    assert leakage["counts"]["within_split_groups"] == 0 and leakage["near"] == []


def test_big_group_names_a_file_in_every_split(raw: Path) -> None:
    records = build(raw)
    for name in ("circle_1", "circle_2", "square_3", "square_4", "square_5"):
        (raw / f"train/{name}.png").write_bytes((raw / "train/circle_0.png").read_bytes())
    (raw / "test/square_3.png").write_bytes((raw / "train/circle_0.png").read_bytes())
    (error,) = run(raw, records)["errors"]
    assert has([error], "train/circle_0.png", "test/square_3.png", "and 3 more", "7 images")


def test_exact_duplicate_is_found_on_pixels_not_bytes(raw: Path) -> None:
    records = build(raw)
    pixels = np.asarray(PILImage.open(raw / "train/circle_0.png"))
    PILImage.fromarray(pixels).save(raw / "test/circle_0.png", compress_level=0, optimize=False)
    assert (raw / "test/circle_0.png").read_bytes() != (raw / "train/circle_0.png").read_bytes()
    assert has(run(raw, records)["errors"], "test/circle_0.png", "identical pixels")


def test_near_duplicate_across_splits_is_a_warning(raw: Path) -> None:
    records = build(raw)
    near = noise(1000 + 3).astype(np.int16)  # the pixels of train/square_3.png ...
    near[0, :4] += 9  # ... slightly changed
    save_png(raw / "test/square_3.png", np.clip(near, 0, 255).astype(np.uint8))
    report = run(raw, records, near_duplicate_distance=4)
    assert report["errors"] == []
    assert has(
        report["warnings"],
        "train/labels.csv:5 (train/square_3.png)",
        "test/labels.csv:5 (test/square_3.png)",
        "near duplicates across train and test",
    ), report["warnings"]
    (pair,) = report["leakage"]["near"]
    assert pair["files"] == ["train/square_3.png", "test/square_3.png"]
    assert pair["splits"] == ["train", "test"] and pair["distance"] <= 4 and pair["pairs"] == 1
    assert report["leakage"]["counts"]["near_pairs"] == 1
    assert run(raw, records, near_duplicate_distance=-1)["warnings"] == []


def test_duplicate_within_a_split_is_a_warning(raw: Path) -> None:
    records = build(raw)
    (raw / "train/square_4.png").write_bytes((raw / "train/square_3.png").read_bytes())
    report = run(raw, records)
    assert report["errors"] == []
    assert has(report["warnings"], "train/square_3.png", "train/square_4.png", "within train")
    assert report["leakage"]["within_split"] == [
        {
            "images": 2,
            "splits": {"train": 2},
            "files": ["train/square_3.png", "train/square_4.png"],
        }
    ]
    counts = report["leakage"]["counts"]
    assert counts["within_split_groups"] == 1 and counts["within_split_images"] == 2
    assert counts["exact_groups"] == 0


def test_mask_of_the_wrong_size(raw: Path) -> None:
    records = build(raw)
    save_png(raw / "masks/train/circle_1.png", np.zeros((8, 8), np.uint8))
    assert has(
        run(raw, records)["errors"],
        "masks/train/circle_1.png",
        "expected the size of train/labels.csv:3 (train/circle_1.png), 16x16",
        "found 8x8",
    )


def test_mask_with_an_unknown_value(raw: Path) -> None:
    records = build(raw)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[0, 0] = 7  # categories are 1 (circle) and 2 (square)
    save_png(raw / "masks/test/square_1.png", mask)
    assert has(
        run(raw, records)["errors"],
        "masks/test/square_1.png",
        "expected pixel values 0 (background) or a category id [1, 2]",
        "found [7]",
    )


def test_missing_and_rgb_masks(raw: Path) -> None:
    records = build(raw)
    (raw / "masks/train/square_5.png").unlink()
    save_png(raw / "masks/test/circle_2.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    errors = run(raw, records)["errors"]
    assert has(errors, "masks/train/square_5.png", "found no such file")
    assert has(errors, "masks/test/circle_2.png", "expected an 8-bit mask", "found mode RGB")


def test_box_outside_the_image(raw: Path) -> None:
    records = build(raw)
    set_box(records, "train", 2, x=12.0, w=8.0)  # 12 + 8 > 16
    assert has(
        run(raw, records)["errors"],
        "train: annotation 3 (train/labels.csv:4)",
        "leaves the 16x16 image",
    )


def test_zero_area_box(raw: Path) -> None:
    records = build(raw)
    set_box(records, "test", 1, h=0.0)
    assert has(run(raw, records)["errors"], "test/labels.csv:3", "has zero area")


def test_nan_box(raw: Path) -> None:
    records = build(raw)
    set_box(records, "test", 0, x=float("nan"))
    assert has(run(raw, records)["errors"], "test/labels.csv:2", "is not finite")


def test_object_counts_disagree_with_boxes(raw: Path) -> None:
    splits = assemble_all(build(raw))
    image = dataclasses.replace(splits["train"].images[0], object_counts={"circle": 2})
    train = dataclasses.replace(splits["train"], images=(image, *splits["train"].images[1:]))
    report = validate(raw, {**splits, "train": train}, ValidateParams())
    assert has(
        report["errors"],
        "image train/labels.csv:2",
        "object_counts {'circle': 2} disagree with its boxes {'circle': 1}",
    )


def test_truncated_image_names_its_row(raw: Path) -> None:
    records = build(raw)
    path = raw / "train/square_4.png"
    path.write_bytes(path.read_bytes()[:80])
    assert has(
        run(raw, records)["errors"],
        "train/square_4.png",
        "expected a complete, decodable image",
        "listed at train/labels.csv:6",
    )


def test_size_other_than_annotated_is_an_error(raw: Path) -> None:
    records = build(raw)
    save_png(raw / "test/square_3.png", noise(7)[:, :12])
    assert has(
        run(raw, records)["errors"],
        "test/square_3.png: expected 16x16 as annotated at test/labels.csv:5; found 12x16",
    )


def test_parallel_decode_gives_the_serial_report(raw: Path) -> None:
    records = build(raw)
    (raw / "test/circle_0.png").write_bytes((raw / "train/circle_0.png").read_bytes())
    path = raw / "train/square_4.png"
    path.write_bytes(path.read_bytes()[:80])  # truncated: its error must come back too
    splits, params = assemble_all(records), ValidateParams(min_per_class=3)
    serial = validate(raw, splits, params, processes=1)
    assert validate(raw, splits, params, processes=2) == serial
    assert has(serial["errors"], "train/square_4.png", "listed at train/labels.csv:6")


def test_class_imbalance_and_small_classes_warn(raw: Path) -> None:
    train = ["circle"] * 5 + ["square"]
    warnings = run(raw, build(raw, train=train), max_imbalance=2.0, min_per_class=3)["warnings"]
    assert has(warnings, "class imbalance in train", "'circle' has 5", "'square' has 1", "> 2.0")
    assert has(warnings, "class 'square' has only 1 training images")


def test_test_label_unknown_to_train(raw: Path) -> None:
    report = run(raw, build(raw, test=["circle", "square", "triangle"]))
    assert has(
        report["errors"],
        "test/labels.csv:4 (test/triangle_2.png)",
        "label 'triangle' is in test but not in train",
    )


def test_stage_writes_json_markdown_html_and_pictures(project: Path, raw: Path) -> None:
    edit_params(project / "params.yaml", validate={"min_per_class": 3})
    # noise has no labels to learn: the audit (tests/test_label_audit.py) would flag some
    edit_params(project / "params.yaml", label_audit={"model": "none"})
    records = build(raw)
    near = noise(1000 + 3)
    near[0, 0] ^= 1  # a near duplicate of train/square_3.png, so that pairs get drawn too
    save_png(raw / "test/square_3.png", near)
    for split, dataset in assemble_all(records).items():
        schema.save(dataset, project / "norm" / f"{split}.json")
    out = project / "reports" / "shapes"
    proc = run_stage("data_processing.validate", raw, project / "norm", out, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "0 errors, 1 warning(s)" in proc.stdout
    assert "\r" not in proc.stderr  # no bar fragments off a terminal (tests/test_progress.py)
    pngs = {"samples.png", "boxes.png", "near_duplicates.png"}
    assert {p.name for p in out.iterdir()} == {
        "validate.json",
        "validate.md",
        "validate.html",
        "label_audit.json",
    } | pngs
    for png in pngs:
        with PILImage.open(out / png) as im:
            assert im.format == "PNG" and im.width > 64
    page, markdown = (out / "validate.html").read_text(), (out / "validate.md").read_text()
    for png in pngs:
        assert f"<img src='{png}'" in page and f"]({png})" in markdown
    report = json.loads((out / "validate.json").read_text())
    assert set(report["pictures"]) == pngs and len(report["warnings"]) == 1


def test_stage_with_leakage_fails_and_writes_nothing(project: Path, raw: Path) -> None:
    records = build(raw)
    (raw / "test/circle_0.png").write_bytes((raw / "train/circle_0.png").read_bytes())
    for split, dataset in assemble_all(records).items():
        schema.save(dataset, project / "norm" / f"{split}.json")
    out = project / "reports" / "shapes"
    proc = run_stage("data_processing.validate", raw, project / "norm", out, cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "identical pixels in train and test" in proc.stderr
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_missing_image_folder_is_an_error_not_a_crash(raw: Path) -> None:
    records = build(raw)
    for png in (raw / "test").iterdir():
        png.unlink()
    (raw / "test").rmdir()
    errors = run(raw, records)["errors"]
    assert has(errors, "test/circle_0.png: expected an image file; found no such file")


def test_long_lists_are_cut_and_counted(raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = build(raw)
    for train, test in (
        ("circle_0", "circle_0"),
        ("square_3", "square_1"),
        ("circle_1", "circle_2"),
    ):
        (raw / f"test/{test}.png").write_bytes((raw / f"train/{train}.png").read_bytes())
    report = run(raw, records, max_listed=1)
    assert len(report["errors"]) == 2 and report["errors"][1] == "... and 2 more of this kind"
    assert has(report["errors"][:1], "train/circle_0.png", "test/circle_0.png")  # file order
    assert report["leakage"]["counts"]["exact_groups"] == 3 == len(report["leakage"]["exact"])
    assert report["leakage"]["counts"]["exact_images"] == 6
    monkeypatch.setattr(duplicates, "MAX_PAIRS", 2)  # validate.json keeps examples, counts all
    leakage = run(raw, records, max_listed=1)["leakage"]
    assert len(leakage["exact"]) == 2 and leakage["counts"]["exact_groups"] == 3


def test_near_duplicate_distance_is_bounded() -> None:
    assert ValidateParams(near_duplicate_distance=-1).near_duplicate_distance == -1
    for bad in (-2, 17):
        with pytest.raises(ValidationError):
            ValidateParams(near_duplicate_distance=bad)


def test_importer_fixes_are_reported_as_warnings(raw: Path) -> None:
    splits = assemble_all(build(raw))
    info = {**splits["test"].info, "warnings": ["labels.csv:3: swapped box corners fixed"]}
    splits["test"] = dataclasses.replace(splits["test"], info=info)
    report = validate(raw, splits, ValidateParams(min_per_class=3))
    assert report["warnings"] == ["test: labels.csv:3: swapped box corners fixed"]


def scan_of(splits: list[int], phashes: list[int], shas: list[int]) -> checks.Scan:
    """A Scan without files: row k is in split splits[k] ("train", "test") with those hashes."""
    names = ("train", "test")
    images = tuple(
        schema.Image(k + 1, f"{names[s]}/{k}.png", 8, 8, source=f"{names[s]}.csv:{k + 2}")
        for k, s in enumerate(splits)
    )
    n = len(splits)
    return checks.Scan(
        splits=names,
        images=images,
        split=np.array(splits, np.uint8),
        width=np.full(n, 8, np.int32),
        height=np.full(n, 8, np.int32),
        modes=("L",),
        mode=np.zeros(n, np.uint8),
        sha256=np.array([sha.to_bytes(32, "big") for sha in shas], "S32"),
        phash=np.array(phashes, np.uint64),
    )


def flip_bits(value: int, n: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, n, replace=False):
        value ^= 1 << int(bit)
    return value


def random_hashes(rng: np.random.Generator, n: int) -> list[int]:
    return [int(h) for h in rng.integers(0, 2**64, n, dtype=np.uint64)]


def planted(seed: int = 0) -> tuple[list[int], list[int]]:
    """~300 random 64-bit hashes in two sides, with near pairs 0..8 bits apart planted across
    them and repeated values on each side (identical pHashes must be found for every copy)."""
    rng = np.random.default_rng(seed)
    a, b = random_hashes(rng, 150), random_hashes(rng, 110)
    b += [flip_bits(a[k], k % 9, rng) for k in range(40)]  # planted: distances 0..8
    a += a[:5] + [flip_bits(a[7], 1, rng)]  # repeats and a neighbour within a side
    b += b[140:143]
    return a, b


def test_near_pairs_equal_brute_force() -> None:
    a, b = planted()
    ha, hb = np.array(a, np.uint64), np.array(b, np.uint64)
    distance = {
        (i, j): (x ^ y).bit_count()
        for (i, x), (j, y) in itertools.product(enumerate(a), enumerate(b))
    }
    for max_distance in range(7):
        found = duplicates.near_pairs(ha, hb, max_distance)
        expected = {(i, j, d) for (i, j), d in distance.items() if d <= max_distance}
        assert len(found) == len(expected)  # each pair once
        assert set(map(tuple, found.tolist())) == expected, max_distance
        assert found.tolist() == sorted(found.tolist(), key=lambda r: (r[2], r[0], r[1]))
        assert len(expected) >= 5 + 4 * max_distance  # the planted pairs, at least
    assert duplicates.near_pairs(ha, hb, -1).shape == (0, 3)
    assert duplicates.near_pairs(ha[:0], hb, 4).shape == (0, 3)


def test_near_duplicates_count_image_pairs_like_brute_force() -> None:
    """Collapsed pHashes still count every image pair, less those with identical pixels."""
    a, b = planted(1)
    hashes = a + b + a[:20] + b[:20]  # copies into the other split: pixels identical or not
    splits = [0] * len(a) + [1] * len(b) + [1] * 20 + [0] * 20
    # like pixels, a sha determines the pHash: the repeats planted() made get new pixels
    shas = list(range(len(a) + len(b)))
    shas += [k if k % 2 else 1000 + k for k in range(20)]  # odd: identical to a[k]
    shas += [len(a) + k if k % 3 else 2000 + k for k in range(20)]  # identical to b[k]
    scan = scan_of(splits, hashes, shas)
    for max_distance in (0, 3, 6):
        near = duplicates.find_near_duplicates(scan, max_distance)
        pairs = [
            (x, y)
            for x, y in itertools.product(range(len(hashes)), repeat=2)
            if splits[x] == 0
            and splits[y] == 1
            and shas[x] != shas[y]
            and (hashes[x] ^ hashes[y]).bit_count() <= max_distance
        ]
        assert int(near[:, 3].sum()) == len(pairs) and len(pairs) > 0
        hash_pairs = {(hashes[x], hashes[y]) for x, y in pairs}
        assert {(hashes[x], hashes[y]) for x, y in near[:, :2].tolist()} == hash_pairs
        assert len(near) == len(hash_pairs)
    examples = duplicates.check_leakage(scan, 6, max_listed=5)[2]["near"]
    rows = [[int(Path(file).stem) for file in example["files"]] for example in examples]
    assert len(rows) == len(near) and all(shas[x] != shas[y] for x, y in rows)
    assert any(hashes[x] == hashes[y] for x, y in rows)  # distance 0, pixels differing


def test_thousands_of_identical_images_are_one_group_and_fast() -> None:
    n = 2000  # per split: 4,000,000 cross pairs if compared pairwise
    blank = scan_of([0] * n + [1] * n, [0] * (2 * n), [7] * (2 * n))
    start = time.perf_counter()
    errors, warnings, leakage = duplicates.check_leakage(blank, 4, max_listed=20)
    assert time.perf_counter() - start < 2.0
    assert len(errors) == 1 and "4000 images: 2000 in train, 2000 in test" in errors[0]
    assert "and 3996 more" in errors[0] and warnings == []
    assert leakage["counts"] == {
        "exact_groups": 1,
        "exact_images": 4000,
        "within_split_groups": 0,
        "within_split_images": 0,
        "near_pairs": 0,  # identical pixels are exact duplicates, not near ones
        "near_hash_pairs": 0,
    }
    assert len(leakage["exact"][0]["files"]) == duplicates.GROUP_FILES


def test_thousands_of_images_with_one_phash_are_one_near_row_and_fast() -> None:
    n = 2000  # same pHash, different pixels: 4,000,000 near pairs, counted, never formed
    flat = scan_of([0] * n + [1] * n, [5] * (2 * n), list(range(2 * n)))
    start = time.perf_counter()
    errors, warnings, leakage = duplicates.check_leakage(flat, 4, max_listed=20)
    assert time.perf_counter() - start < 2.0
    assert errors == [] and leakage["counts"]["near_pairs"] == n * n
    assert leakage["counts"]["near_hash_pairs"] == 1 and len(leakage["near"]) == 1
    (warning,) = warnings
    assert has(
        [warning],
        "train/0.png",
        "test/2000.png",
        f"{n * n} image pairs across the splits share these pHashes",
    )
