"""The validate stage's checks, each on a tiny generated dataset with boxes and masks.

Every broken case starts from one clean dataset (16x16 noise images, one box and one mask per
image, 2 classes) and breaks one thing; the check must fire and name the file or row.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_params, run_stage
from PIL import Image as PILImage

from data_processing import schema
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
    assert report["leakage"]["exact"] == [["train/circle_0.png", "test/square_1.png"]]
    assert report["leakage"]["counts"] == {"exact": 1, "near": 0, "within_split": 0}


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
    assert [p[:2] for p in report["leakage"]["near"]] == [
        ["train/square_3.png", "test/square_3.png"]
    ]
    assert run(raw, records, near_duplicate_distance=-1)["warnings"] == []


def test_duplicate_within_a_split_is_a_warning(raw: Path) -> None:
    records = build(raw)
    (raw / "train/square_4.png").write_bytes((raw / "train/square_3.png").read_bytes())
    report = run(raw, records)
    assert report["errors"] == []
    assert has(report["warnings"], "train/square_3.png", "train/square_4.png", "within train")


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
    pngs = {"samples.png", "boxes.png", "near_duplicates.png"}
    assert {p.name for p in out.iterdir()} == {
        "validate.json",
        "validate.md",
        "validate.html",
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


def test_long_lists_are_cut_and_counted(raw: Path) -> None:
    records = build(raw)
    for name in ("circle_0", "square_1", "circle_2"):
        (raw / f"test/{name}.png").write_bytes((raw / "train/circle_0.png").read_bytes())
    report = run(raw, records, max_listed=1)
    assert len(report["errors"]) == 2 and report["errors"][1] == "... and 2 more of this kind"
    assert report["leakage"]["counts"]["exact"] == 3 == len(report["leakage"]["exact"])


def test_importer_fixes_are_reported_as_warnings(raw: Path) -> None:
    splits = assemble_all(build(raw))
    info = {**splits["test"].info, "warnings": ["labels.csv:3: swapped box corners fixed"]}
    splits["test"] = dataclasses.replace(splits["test"], info=info)
    report = validate(raw, splits, ValidateParams(min_per_class=3))
    assert report["warnings"] == ["test: labels.csv:3: swapped box corners fixed"]
