"""Importers: every source format converts the same data to the same normalized dataset, loads
in pycocotools, and every kind of bad input is a DataError naming file, row, field and fix."""

import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest
import shapes
from conftest import edit_params, run_stage
from PIL import Image
from pycocotools.coco import COCO

from data_processing import schema, sources
from data_processing.core.errors import DataError
from data_processing.normalize import normalize

BOX_FORMATS = ("coco", "voc", "yolo")  # compared with seed_json, which also has everything


def importer(fmt: str):
    return sources.get("seed" if fmt == "seed_onehot" else fmt)


def comparable(dataset: schema.Dataset, labels_only: bool = False) -> dict:
    """to_json without what legitimately differs between formats (and, for label-only formats,
    without what they cannot carry)."""
    doc = json.loads(json.dumps(schema.to_json(dataset)))
    doc["info"].pop("source_format")
    for image in doc["images"]:
        image.pop("source", None)
        if labels_only:
            image.pop("object_counts", None)
            image.pop("mask_file", None)
    if labels_only:
        doc["annotations"] = []
        doc["info"].pop("mask_encoding", None)
    return doc


@pytest.fixture(scope="module")
def shapes_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shapes.write_all(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def parsed(shapes_dirs: dict[str, Path]) -> dict[str, dict[str, schema.Dataset]]:
    return {fmt: importer(fmt).parse(path, "shapes") for fmt, path in shapes_dirs.items()}


# --- the same data from every format ---------------------------------------------------------


@pytest.mark.parametrize("fmt", BOX_FORMATS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_box_formats_identical(parsed: dict, fmt: str, split: str) -> None:
    reference = parsed["seed_json"][split]
    assert len(reference.annotations) > len(reference.images) > 0  # boxes, not just labels
    assert reference.info["mask_encoding"] and reference.label_mode == "multi"
    assert comparable(parsed[fmt][split]) == comparable(reference)
    assert parsed[fmt][split].info["source_format"] == fmt


@pytest.mark.parametrize("fmt", ["seed", "seed_onehot"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_label_formats_match_the_labels_of_box_formats(parsed: dict, fmt: str, split: str) -> None:
    expected = comparable(parsed["seed_json"][split], labels_only=True)
    assert comparable(parsed[fmt][split], labels_only=True) == expected
    assert any(len(i.labels) > 1 for i in parsed[fmt][split].images)


def test_imagefolder_matches_single_label_seed(parsed: dict, tmp_path: Path) -> None:
    seed_dir = shapes.write_seed(tmp_path / "seed", shapes.generate(single_label=True))
    for split, expected in sources.get("seed").parse(seed_dir, "shapes").items():
        got = comparable(parsed["imagefolder"][split])
        for image in got["images"]:  # train/circle/x.png -> train/x.png
            parts = image["file_name"].split("/")
            assert parts[1] == got["categories"][image["labels"][0] - 1]["name"]
            image["file_name"] = f"{parts[0]}/{parts[2]}"
        got["images"].sort(key=lambda i: i["file_name"])
        for new_id, image in enumerate(got["images"], start=1):
            image["id"] = new_id
        assert expected.label_mode == "single"
        assert got == comparable(expected)


@pytest.mark.parametrize("fmt", shapes.FORMATS)
def test_every_format_loads_in_pycocotools(parsed: dict, fmt: str, tmp_path: Path) -> None:
    dataset = parsed[fmt]["train"]
    assert schema.validate(dataset) == []
    schema.save(dataset, tmp_path / "train.json")
    coco = COCO(str(tmp_path / "train.json"))
    assert len(coco.getImgIds()) == len(dataset.images) == 24
    assert len(coco.getAnnIds()) == len(dataset.annotations)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(shapes.CLASSES)


def test_output_is_deterministic(shapes_dirs: dict[str, Path], tmp_path: Path) -> None:
    for i in range(2):
        schema.save(sources.get("yolo").parse(shapes_dirs["yolo"])["train"], tmp_path / f"{i}")
    assert (tmp_path / "0").read_bytes() == (tmp_path / "1").read_bytes()


# --- autodetect and the normalize stage --------------------------------------------------------


@pytest.mark.parametrize("fmt", shapes.FORMATS)
def test_detect_each_format(shapes_dirs: dict[str, Path], fmt: str) -> None:
    assert sources.detect(shapes_dirs[fmt]) == importer(fmt).__name__.rsplit(".", 1)[1]


def test_detect_none_lists_every_reason(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no format matched") as err:
        sources.detect(tmp_path)
    for name in sources.available():
        assert f"{name}: " in str(err.value)
    assert "no train/groundtruth.csv" in str(err.value)


def test_detect_ambiguous_names_the_candidates(shapes_dirs: dict, tmp_path: Path) -> None:
    raw = shutil.copytree(shapes_dirs["voc"], tmp_path / "both")
    (raw / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    with pytest.raises(DataError, match=r"ambiguous: \['voc', 'yolo'\]"):
        sources.detect(raw)


def test_normalize_stage_detects_format(shapes_dirs: dict, project: Path) -> None:
    raw = shutil.copytree(shapes_dirs["coco"], project / "datasets" / "raw" / "shapes")
    proc = run_stage("data_processing.normalize", "datasets/raw/shapes", "out", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "normalize: shapes (coco) -> out (train: 24 images, test: 12 images)" in proc.stdout
    expected = tmp = project / "expected.json"
    schema.save(sources.get("coco").parse(raw)["train"], tmp)
    assert (project / "out" / "train.json").read_bytes() == expected.read_bytes()


def test_normalize_stage_rejects_unknown_format(shapes_dirs: dict, project: Path) -> None:
    shutil.copytree(shapes_dirs["coco"], project / "datasets" / "raw" / "shapes")
    edit_params(project / "params.yaml", normalize={"formats": {"shapes": "cocoa"}})
    proc = run_stage("data_processing.normalize", "datasets/raw/shapes", "out", cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "field 'normalize.formats.shapes'" in proc.stderr and "found 'cocoa'" in proc.stderr


# --- small hand-made datasets ---------------------------------------------------------------


def tiny(n: int = 3) -> list[shapes.Sample]:
    return shapes.generate(n_train=n, n_test=n)


def meta(raw: Path) -> list[dict]:
    return json.loads((raw / "train" / "meta.json").read_text())


def set_meta(raw: Path, entries: list[dict]) -> None:
    (raw / "train" / "meta.json").write_text(json.dumps(entries))


def csv_rows(raw: Path, *lines: str) -> None:
    (raw / "train" / "groundtruth.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def image(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


# seed


def test_seed_multi_label_and_quoted_comma(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    image(raw / "train" / "extra.png")
    csv_rows(
        raw,
        "filename,label",
        '"train_000.png","big, red;circle"',
        "train_001.JPG,square",
        "train_002.bmp,triangle",
        "extra.png,circle;circle",
    )
    train = sources.get("seed").parse(raw)["train"]
    names = train.category_names()
    assert "big, red" in names and train.label_mode == "multi"
    first = next(i for i in train.images if i.file_name == "train/train_000.png")
    assert [names[c - 1] for c in first.labels] == ["big, red", "circle"]
    extra = next(i for i in train.images if i.file_name == "train/extra.png")
    assert [names[c - 1] for c in extra.labels] == ["circle"]  # deduplicated


def test_seed_one_hot_value_names_the_class_column(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny(), one_hot=True)
    text = (raw / "train" / "groundtruth.csv").read_text().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",2"
    csv_rows(raw, *text)
    with pytest.raises(DataError) as err:
        sources.get("seed").parse(raw)
    assert (err.value.row, err.value.field, err.value.expected) == (3, "triangle", "0 or 1")


def test_seed_wrong_delimiter_is_named(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    csv_rows(raw, "filename;label", "train_000.png;circle")
    with pytest.raises(DataError, match="found delimiter ';'") as err:
        sources.get("seed").parse(raw)
    assert err.value.row == 1 and "groundtruth.csv" in str(err.value.file)


def test_seed_utf16_bom_is_named(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    path = raw / "train" / "groundtruth.csv"
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(DataError, match="expected UTF-8 text; found a UTF-16 byte-order mark"):
        sources.get("seed").parse(raw)


def test_seed_empty_csv(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    (raw / "train" / "groundtruth.csv").write_bytes(b"")
    with pytest.raises(DataError, match="row 1: expected header .* found an empty file"):
        sources.get("seed").parse(raw)


def test_seed_unicode_normalization_is_explained(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    nfc, nfd = (unicodedata.normalize(form, "café.png") for form in ("NFC", "NFD"))
    assert nfc != nfd
    (raw / "train" / "train_000.png").rename(raw / "train" / nfd)
    csv_rows(
        raw, "filename,label", f"{nfc},circle", "train_001.JPG,square", "train_002.bmp,triangle"
    )
    with pytest.raises(DataError, match="Unicode normalization") as err:
        sources.get("seed").parse(raw)
    assert (err.value.row, err.value.field) == (2, "filename")
    assert f"did you mean {nfd!r}?" in str(err.value)


def test_seed_symlink_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    outside = image(tmp_path / "elsewhere" / "secret.png")
    (raw / "train" / "train_000.png").unlink()
    os.symlink(outside, raw / "train" / "train_000.png")
    with pytest.raises(DataError, match="links may not leave it") as err:
        sources.get("seed").parse(raw)
    assert err.value.row == "groundtruth.csv:2" and "train_000.png" in str(err.value.file)


def test_seed_symlink_inside_the_dataset_is_fine(tmp_path: Path) -> None:
    raw = shapes.write_seed(tmp_path / "raw", tiny())
    target = shutil.copy(raw / "train" / "train_000.png", raw / "shared.png")
    (raw / "train" / "train_000.png").unlink()
    os.symlink(target, raw / "train" / "train_000.png")
    assert len(sources.get("seed").parse(raw)["train"].images) == 3


# seed_json


def test_seed_json_one_pixel_box_and_swapped_corners(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[0]["bounding boxes"] = [
        {"name": "circle", "x1": 3, "x2": 4, "y1": 5, "y2": 6},  # the 1-pixel box at (3, 5)
        {"name": "bike", "x1": 22, "x2": 13, "y1": 27, "y2": 23},  # the seed's swapped example
    ]
    entries[0]["counts"] = [{"circle": 1}, {"bike": 1}]
    entries[0]["class labels"] = None
    entries[0]["segmentation mask"] = None
    set_meta(raw, entries)
    train = sources.get("seed_json").parse(raw)["train"]
    assert schema.validate(train) == []
    boxes = [a.bbox for a in train.annotations if a.image_id == 1]
    assert boxes == [(3.0, 5.0, 1.0, 1.0), (13.0, 23.0, 9.0, 4.0)]
    assert train.images[0].object_counts == {"bike": 1, "circle": 1}
    assert [train.category_names()[c - 1] for c in train.images[0].labels] == ["bike", "circle"]
    assert train.info["warnings"] == [
        "train/meta.json, row 1, field bounding boxes[1].x1: swapped corners x1=22 > x2=13, "
        "read as x1=13, x2=22",
        "train/meta.json, row 1, field bounding boxes[1].y1: swapped corners y1=27 > y2=23, "
        "read as y1=23, y2=27",
    ]


def test_seed_json_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[1]["bounding_boxes"] = entries[1].pop("bounding boxes")
    set_meta(raw, entries)
    with pytest.raises(DataError, match="did you mean 'bounding boxes'") as err:
        sources.get("seed_json").parse(raw)
    assert (err.value.row, err.value.field) == (2, "bounding_boxes")


def test_seed_json_bad_coordinate_names_the_field(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[2]["bounding boxes"][0]["y2"] = "ten"
    set_meta(raw, entries)
    with pytest.raises(DataError, match="expected an integer or a number; found a string") as e:
        sources.get("seed_json").parse(raw)
    assert (e.value.row, e.value.field) == (3, "bounding boxes[0].y2")


def test_seed_json_malformed(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    (raw / "train" / "meta.json").write_text('[\n {"filename": "train_000.png",}\n]')
    with pytest.raises(DataError, match="expected valid JSON; found Expecting property name"):
        sources.get("seed_json").parse(raw)


def test_seed_json_duplicate_and_missing_image(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    set_meta(raw, [*entries, entries[0]])
    with pytest.raises(DataError, match="first in element 1") as err:
        sources.get("seed_json").parse(raw)
    assert (err.value.row, err.value.field) == (4, "filename")
    set_meta(raw, [{**entries[0], "filename": "Train_000.png"}, *entries[1:]])
    with pytest.raises(DataError, match="no such file .did you mean 'train_000.png'"):
        sources.get("seed_json").parse(raw)


def test_seed_json_extra_image(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    image(raw / "train" / "stray.GIF")
    with pytest.raises(DataError, match="1 image.s. not listed: .'stray.GIF'") as err:
        sources.get("seed_json").parse(raw)
    assert Path(err.value.file).name == "stray.GIF"


def test_seed_json_mask_of_the_wrong_size(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    Image.new("L", (16, 32)).save(raw / "train" / "masks" / "train_001.png")
    with pytest.raises(DataError, match="expected a 32x32 mask .* found 16x32") as err:
        sources.get("seed_json").parse(raw)
    assert (err.value.row, err.value.field) == (2, "segmentation mask")


def test_seed_json_mask_link_out_of_the_dataset(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[0]["segmentation mask"] = "../../elsewhere/m.png"
    image(tmp_path / "elsewhere" / "m.png")
    set_meta(raw, entries)
    with pytest.raises(DataError, match="inside the dataset folder") as err:
        sources.get("seed_json").parse(raw)
    assert (err.value.row, err.value.field) == (1, "segmentation mask")


@pytest.mark.parametrize(
    ("box", "needle"),
    [
        ({"x1": 4, "x2": 4, "y1": 2, "y2": 9}, "has zero area"),
        ({"x1": 20, "x2": 40, "y1": 2, "y2": 9}, "leaves the 32x32 image"),
    ],
)
def test_normalize_refuses_bad_boxes_naming_the_file(tmp_path: Path, box: dict, needle: str):
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[1]["bounding boxes"].append({"name": "square", **box})
    entries[1]["counts"] = None
    set_meta(raw, entries)
    with pytest.raises(DataError, match=needle) as err:
        normalize(raw, "auto")
    assert "(train/meta.json:2)" in str(err.value)


def test_normalize_refuses_counts_that_disagree_with_boxes(tmp_path: Path) -> None:
    raw = shapes.write_seed_json(tmp_path / "raw", tiny())
    entries = meta(raw)
    entries[0]["counts"] = {"circle": 2}
    set_meta(raw, entries)
    with pytest.raises(DataError, match="train/meta.json:1: object_counts .* disagree"):
        normalize(raw, "seed_json")


# imagefolder


def test_imagefolder_skips_hidden_folders(tmp_path: Path) -> None:
    raw = shapes.write_imagefolder(tmp_path / "raw", tiny())
    image(raw / "train" / ".ipynb_checkpoints" / "circle-checkpoint.png")
    image(raw / "test" / "circle" / ".hidden.png")
    image(raw / "test" / "zebra" / "Z.JPEG")
    splits = sources.get("imagefolder").parse(raw)
    assert splits["train"].category_names() == ["circle", "square", "triangle", "zebra"]
    assert [i.file_name for i in splits["train"].images] == [
        "train/circle/train_000.png",
        "train/square/train_001.JPG",
        "train/triangle/train_002.bmp",
    ]
    assert splits["test"].images[-1].file_name == "test/zebra/Z.JPEG"


def test_imagefolder_image_outside_class_folder(tmp_path: Path) -> None:
    raw = shapes.write_imagefolder(tmp_path / "raw", tiny())
    image(raw / "test" / "loose.png")
    with pytest.raises(DataError, match=r"expected images inside class subfolders \(test/<class>"):
        sources.get("imagefolder").parse(raw)


# coco


def coco_doc(raw: Path) -> dict:
    return json.loads((raw / "annotations" / "instances_train.json").read_text())


def set_coco(raw: Path, doc: dict) -> None:
    (raw / "annotations" / "instances_train.json").write_text(json.dumps(doc))


def test_coco_labels_from_boxes_and_unannotated_images(tmp_path: Path) -> None:
    raw = shapes.write_coco(tmp_path / "raw", tiny())
    doc = coco_doc(raw)
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 101]
    doc["images"][2]["labels"] = []  # the project extension: background
    set_coco(raw, doc)
    train = sources.get("coco").parse(raw)["train"]
    assert train.images[0].labels == (1,) and train.images[0].object_counts == {"circle": 1}
    assert train.images[1].labels is None and train.images[1].object_counts is None
    assert train.images[2].labels == ()
    assert train.label_mode == "multi"  # a background image has no single class


def test_coco_unknown_category_names_the_annotation(tmp_path: Path) -> None:
    raw = shapes.write_coco(tmp_path / "raw", tiny())
    doc = coco_doc(raw)
    doc["annotations"][1]["category_id"] = 7
    set_coco(raw, doc)
    with pytest.raises(DataError, match=r"a category id from categories \[10, 20, 30\]") as err:
        sources.get("coco").parse(raw)
    assert err.value.field == "annotations[1].category_id" and err.value.found == "7"


def test_coco_duplicate_file_and_wrong_size(tmp_path: Path) -> None:
    raw = shapes.write_coco(tmp_path / "raw", tiny())
    doc = coco_doc(raw)
    set_coco(raw, {**doc, "images": [*doc["images"], {**doc["images"][0], "id": 9}]})
    with pytest.raises(DataError, match="expected each file_name once") as err:
        sources.get("coco").parse(raw)
    assert (err.value.row, err.value.field) == (4, "images[3].file_name")
    doc["images"][1]["height"] = 31
    set_coco(raw, doc)
    with pytest.raises(DataError, match="expected the image's height 32") as err:
        sources.get("coco").parse(raw)
    assert err.value.field == "images[1].height"


# voc


def test_voc_one_pixel_box_is_continuous_zero_based(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    one = shapes.Shape("circle", 0, 0, 1, 1)  # Datumaro/CVAT corners: xmin=0, xmax=1
    xml = shapes.voc_xml("train_000.png", (one,))
    assert "<xmin>0</xmin>" in xml and "<xmax>1</xmax>" in xml
    (raw / "train" / "train_000.xml").write_text(xml)
    train = sources.get("voc").parse(raw)["train"]
    assert train.annotations[0].bbox == (0.0, 0.0, 1.0, 1.0) and train.annotations[0].area == 1


def test_voc_background_and_unlabelled(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    (raw / "train" / "train_000.xml").write_text(shapes.voc_xml("train_000.png", ()))
    (raw / "train" / "train_001.xml").unlink()
    train = sources.get("voc").parse(raw)["train"]
    assert train.images[0].labels == () and train.images[1].labels is None


def test_voc_bad_number_names_the_element(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    path = raw / "test" / "test_001.xml"
    path.write_text(path.read_text().replace("<ymax>", "<ymax>x", 1))
    with pytest.raises(DataError, match="expected a finite number") as err:
        sources.get("voc").parse(raw)
    assert err.value.field == "object[0]/bndbox/ymax" and err.value.file == path


def test_voc_malformed_xml(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    (raw / "train" / "train_002.xml").write_text("<annotation>\n<filename>train_002.bmp")
    with pytest.raises(DataError, match="train_002.xml, row 2: expected well-formed XML"):
        sources.get("voc").parse(raw)


def test_voc_file_name_typo(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    (raw / "train" / "train_002.xml").write_text(shapes.voc_xml("train_002.BMP", ()))
    with pytest.raises(DataError, match="did you mean 'train_002.bmp'") as err:
        sources.get("voc").parse(raw)
    assert err.value.field == "filename"


# yolo


def test_yolo_empty_label_file_differs_from_missing(tmp_path: Path) -> None:
    raw = shapes.write_yolo(tmp_path / "raw", tiny())
    (raw / "train" / "train_000.txt").write_text("")
    (raw / "train" / "train_001.txt").unlink()
    train = sources.get("yolo").parse(raw)["train"]
    assert train.images[0].labels == () and train.images[0].source == "train/train_000.txt"
    assert train.images[1].labels is None and train.images[1].source == "train/train_001.JPG"
    assert train.images[2].labels == (3,)


def test_yolo_obj_names_and_unused_class(tmp_path: Path) -> None:
    raw = shapes.write_yolo(tmp_path / "raw", tiny())
    (raw / "classes.txt").rename(raw / "obj.names")
    with (raw / "obj.names").open("a") as f:
        f.write("hexagon\n")
    assert sources.detect(raw) == "yolo"
    names = sources.get("yolo").parse(raw)["test"].category_names()
    assert names == ["circle", "hexagon", "square", "triangle"]


@pytest.mark.parametrize(
    ("line", "field", "needle"),
    [
        ("3 0.5 0.5 0.1 0.1", "class", r"expected a class id 0..2; found '3' \(the classes file"),
        ("1 0.5 1.25 0.1 0.1", "cy", "expected a normalized value in 0..1; found 1.25"),
        ("1 0.5 0.5 nan 0.1", "w", "expected a finite number"),
    ],
)
def test_yolo_bad_line_names_the_field(tmp_path: Path, line: str, field: str, needle: str):
    raw = shapes.write_yolo(tmp_path / "raw", tiny())
    path = raw / "test" / "test_002.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataError, match=needle) as err:
        sources.get("yolo").parse(raw)
    rows = len(path.read_text().splitlines())
    assert (err.value.file, err.value.row, err.value.field) == (path, rows, field)


def test_yolo_label_without_image(tmp_path: Path) -> None:
    raw = shapes.write_yolo(tmp_path / "raw", tiny())
    (raw / "train" / "train-001.txt").write_text("")
    with pytest.raises(DataError, match="did you mean .train_001."):
        sources.get("yolo").parse(raw)


def test_exif_rotated_jpeg_uses_upright_size(tmp_path: Path) -> None:
    raw = shapes.write_yolo(tmp_path / "raw", tiny())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, shown rotated: upright 10 x 20
    (raw / "train" / "train_001.JPG").unlink()
    (raw / "train" / "masks" / "train_001.png").unlink()  # its 32x32 mask no longer fits
    Image.new("RGB", (20, 10)).save(raw / "train" / "train_001.JPG", exif=exif)
    (raw / "train" / "train_001.txt").write_text("1 0.5 0.5 0.2 0.1\n")
    train = sources.get("yolo").parse(raw)["train"]
    assert (train.images[1].width, train.images[1].height) == (10, 20)
    assert train.annotations[1].bbox == (4.0, 9.0, 2.0, 2.0)


def test_voc_declared_size_must_match(tmp_path: Path) -> None:
    raw = shapes.write_voc(tmp_path / "raw", tiny())
    path = raw / "train" / "train_001.xml"
    path.write_text(path.read_text().replace("<width>32</width>", "<width>23</width>"))
    with pytest.raises(DataError, match="expected the image's width 32 .*; found 23") as err:
        sources.get("voc").parse(raw)
    assert err.value.field == "size/width" and err.value.file == path


def test_normalize_stage_prints_warnings(project: Path) -> None:
    raw = shapes.write_seed_json(project / "datasets" / "raw" / "shapes", tiny())
    entries = meta(raw)
    box = entries[0]["bounding boxes"][0]
    box["x1"], box["x2"] = box["x2"], box["x1"]
    set_meta(raw, entries)
    proc = run_stage("data_processing.normalize", "datasets/raw/shapes", "out", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "warning: train/meta.json, row 1, field bounding boxes[0].x1: swapped" in proc.stderr
    saved = schema.load(project / "out" / "train.json")
    assert saved.info["warnings"] and schema.validate(saved) == []
