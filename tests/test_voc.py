"""Pascal VOC corners: read as continuous 0-based coordinates (Datumaro, CVAT, globox) by
default, as the devkit's 1-based inclusive pixels with params normalize.voc_coordinates:
one_based; sub-pixel overshoot is clipped with a warning, more is an error naming the file.

Every expectation is a COCO file this test writes itself, normalized by the coco importer."""

import json
from pathlib import Path

import numpy as np
import pytest
import shapes
from conftest import ROOT, edit_params, run_stage
from PIL import Image
from pycocotools.coco import COCO

from data_processing import schema, sources
from data_processing.core.errors import DataError
from data_processing.core.params import load_params
from data_processing.normalize import NormalizeParams, normalize

W, H = 32, 24  # not square: a swapped axis shows
# image -> boxes as COCO [x, y, w, h]; every edge of the image is touched by some box
BOXES = {
    "train/a.png": [("cat", 0, 0, 5, 4), ("dog", 26, 18, 6, 6)],  # top-left, bottom-right
    "train/b.png": [("cat", 0, 10, 3, 7), ("dog", 29, 0, 3, 2), ("cat", 10.5, 8.25, 4.5, 2)],
    "train/c.png": [("dog", 0, 0, W, H)],  # the whole image
    "test/d.png": [("cat", 7, 3, 1, 1), ("dog", 12, 0, 20, H)],  # a 1-pixel box; full height
}


def corners(box: tuple, one_based: bool) -> tuple[float, float, float, float]:
    """VOC (xmin, ymin, xmax, ymax) of a COCO box: continuous, or devkit inclusive pixels."""
    _, x, y, w, h = box
    return x + one_based, y + one_based, x + w, y + h


def voc_text(file: str, objects: list[tuple]) -> str:
    """A VOC annotation as Datumaro and CVAT write it; objects are (name, xmin, ymin, xmax,
    ymax) with the corners written as given."""
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    return (
        f"<annotation><folder></folder><filename>{file}</filename><size><width>{W}</width>"
        f"<height>{H}</height><depth>3</depth></size><segmented>0</segmented>{body}"
        "</annotation>\n"
    )


def write_images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for rel in BOXES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(root / rel)
    return root


def write_voc(root: Path, one_based: bool = False, edit: dict | None = None) -> Path:
    """The BOXES dataset in VOC; `edit`: image -> objects (name, corners) written instead."""
    write_images(root)
    for rel, boxes in BOXES.items():
        objects = [(b[0], *corners(b, one_based)) for b in boxes]
        objects = (edit or {}).get(rel, objects)
        (root / rel).with_suffix(".xml").write_text(voc_text(Path(rel).name, objects))
    return root


def write_coco(root: Path) -> Path:
    """The same images and boxes as a COCO instances file per split."""
    boxes = BOXES
    write_images(root)
    names = sorted({b[0] for bs in boxes.values() for b in bs})
    cats = [{"id": 7 + i, "name": n} for i, n in enumerate(names)]
    (root / "annotations").mkdir()
    for split in ("train", "test"):
        images, anns = [], []
        for rel in (r for r in boxes if r.startswith(f"{split}/")):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": Path(rel).name, "width": W, "height": H})
            for name, x, y, w, h in boxes[rel]:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": 7 + names.index(name),
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        doc = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def comparable(dataset: schema.Dataset) -> dict:
    """to_json without what differs by design: format, folder name, warnings, sources."""
    doc = json.loads(json.dumps(schema.to_json(dataset)))
    for key in ("source_format", "dataset", "description"):
        doc["info"].pop(key)
    doc["info"].pop("warnings", None)
    for image in doc["images"]:
        image.pop("source", None)
    return doc


def assert_same(got: dict[str, schema.Dataset], expected: dict[str, schema.Dataset]) -> None:
    assert got.keys() == expected.keys() == {"train", "test"}
    for split in got:
        assert comparable(got[split]) == comparable(expected[split])


@pytest.fixture
def coco(tmp_path: Path) -> dict[str, schema.Dataset]:
    return normalize(write_coco(tmp_path / "coco"), "coco")


def voc_options(coordinates: str) -> dict[str, str]:
    return NormalizeParams(voc_coordinates=coordinates).options("voc")


# --- the two conventions -----------------------------------------------------------------------


def test_zero_based_corners_match_coco(tmp_path: Path, coco: dict) -> None:
    raw = write_voc(tmp_path / "voc")
    assert (
        "<xmin>0</xmin><ymin>0</ymin><xmax>5</xmax><ymax>4</ymax>"
        in (raw / "train" / "a.xml").read_text()
    )
    got = normalize(raw, "voc")  # the default: zero_based
    assert_same(got, coco)
    assert got["train"].info["source_format"] == "voc" and "warnings" not in got["train"].info
    assert_same(normalize(raw, "voc", voc_options("zero_based")), got)


def test_edge_boxes_load_in_pycocotools(tmp_path: Path) -> None:
    splits = normalize(write_voc(tmp_path / "voc"), "voc")
    schema.save(splits["train"], tmp_path / "train.json")
    api = COCO(str(tmp_path / "train.json"))
    by_file = {i["file_name"]: i["id"] for i in api.loadImgs(api.getImgIds())}
    names = {c["id"]: c["name"] for c in api.loadCats(api.getCatIds())}
    for rel, boxes in BOXES.items():
        if not rel.startswith("train/"):
            continue
        anns = api.loadAnns(api.getAnnIds(imgIds=[by_file[rel]]))
        got = sorted((names[a["category_id"]], *a["bbox"], a["area"]) for a in anns)
        assert got == sorted((*b, b[3] * b[4]) for b in boxes)
    whole = api.loadAnns(api.getAnnIds(imgIds=[by_file["train/c.png"]]))[0]
    assert whole["bbox"] == [0, 0, W, H]  # xmin=0 ... xmax=width: the whole image


def test_one_based_switch_reads_the_devkit_convention(tmp_path: Path, coco: dict) -> None:
    raw = write_voc(tmp_path / "voc", one_based=True)
    text = (raw / "test" / "d.xml").read_text()
    assert "<xmin>8</xmin><ymin>4</ymin><xmax>8</xmax><ymax>4</ymax>" in text  # 1 pixel
    assert_same(normalize(raw, "voc", voc_options("one_based")), coco)
    assert_same(sources.get("voc").parse(raw, coordinates="one_based"), coco)


def test_the_two_conventions_differ_by_one_pixel(tmp_path: Path) -> None:
    raw = write_voc(tmp_path / "voc", one_based=True, edit={"test/d.png": [("cat", 3, 4, 8, 9)]})
    zero = sources.get("voc").parse(raw)["test"].annotations[0].bbox
    one = sources.get("voc").parse(raw, coordinates="one_based")["test"].annotations[0].bbox
    assert zero == (3.0, 4.0, 5.0, 5.0)  # x = xmin, w = xmax - xmin
    assert one == (2.0, 3.0, 6.0, 6.0)  # x = xmin - 1, w = xmax - xmin + 1


def test_zero_based_file_read_as_one_based_is_an_error(tmp_path: Path) -> None:
    raw = write_voc(tmp_path / "voc")
    with pytest.raises(DataError) as err:
        sources.get("voc").parse(raw, coordinates="one_based")
    assert err.value.file == raw / "train" / "a.xml"
    assert err.value.field == "object[0]/bndbox/xmin"
    assert "1 pixel(s) past the left edge" in str(err.value)
    assert "normalize.voc_coordinates" in str(err.value)  # the hint


def test_shapes_devkit_files_match_shapes_coco(tmp_path: Path) -> None:
    samples = shapes.generate(n_train=4, n_test=3)
    raw = shapes.write_voc(tmp_path / "voc", samples, one_based=True)
    expected = sources.get("coco").parse(shapes.write_coco(tmp_path / "coco", samples))
    got = sources.get("voc").parse(raw, coordinates="one_based")
    for split in ("train", "test"):
        doc, ref = comparable(got[split]), comparable(expected[split])
        assert doc == ref and doc["annotations"]


def test_unknown_convention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown VOC coordinates '1-based'"):
        sources.get("voc").parse(write_voc(tmp_path / "voc"), coordinates="1-based")
    path = tmp_path / "params.yaml"
    path.write_text("normalize:\n  voc_coordinates: 1-based\n")
    with pytest.raises(DataError) as err:
        load_params("normalize", NormalizeParams, path)
    assert err.value.field == "normalize.voc_coordinates" and "'1-based'" in str(err.value)
    assert "zero_based" in str(err.value) and "one_based" in str(err.value)
    assert load_params("normalize", NormalizeParams, ROOT / "params.yaml").voc_coordinates in (
        "zero_based",
        "one_based",
    )
    assert NormalizeParams().options("voc") == {"coordinates": "zero_based"}
    assert NormalizeParams().options("coco") == {}


# --- overshoot: clipped below one pixel, an error from one pixel -------------------------------


def test_sub_pixel_overshoot_is_clipped_with_a_warning(tmp_path: Path) -> None:
    edit = {
        "train/a.png": [("cat", -0.3, 0, 5, 4), ("dog", 26, 18, W + 0.5, H + 0.999)],
        "test/d.png": [("cat", 7, -0.75, 8, 1), ("dog", 12, 0, 32, 24)],
    }
    splits = normalize(write_voc(tmp_path / "voc", edit=edit), "voc")
    a = [a.bbox for a in splits["train"].annotations if a.image_id == 1]
    assert a == [(0.0, 0.0, 5.0, 4.0), (26.0, 18.0, 6.0, 6.0)]
    assert splits["test"].annotations[0].bbox == (7.0, 0.0, 1.0, 1.0)
    warnings = splits["train"].info["warnings"]
    assert warnings == [
        "train/a.xml, field object[0]/bndbox/xmin: xmin=-0.3 on 'cat' is 0.3 pixel past the "
        f"left edge of the {W}x{H} image; clipped to xmin=0",
        "train/a.xml, field object[1]/bndbox/xmax: xmax=32.5 on 'dog' is 0.5 pixel past the "
        f"right edge of the {W}x{H} image; clipped to xmax=32",
        "train/a.xml, field object[1]/bndbox/ymax: ymax=24.999 on 'dog' is 0.999 pixel past "
        f"the bottom edge of the {W}x{H} image; clipped to ymax=24",
    ]
    assert splits["test"].info["warnings"] == [
        "test/d.xml, field object[0]/bndbox/ymin: ymin=-0.75 on 'cat' is 0.75 pixel past the "
        f"top edge of the {W}x{H} image; clipped to ymin=0"
    ]


def test_sub_pixel_overshoot_one_based(tmp_path: Path) -> None:
    edit = {"train/a.png": [("cat", 0.5, 1, 5, H + 0.5), ("dog", 27, 19, 32, 24)]}
    raw = write_voc(tmp_path / "voc", one_based=True, edit=edit)
    train = normalize(raw, "voc", voc_options("one_based"))["train"]
    assert train.annotations[0].bbox == (0.0, 0.0, 5.0, float(H))
    assert [w.split(": ", 1)[0] for w in train.info["warnings"]] == [
        "train/a.xml, field object[0]/bndbox/xmin",
        "train/a.xml, field object[0]/bndbox/ymax",
    ]
    assert train.info["warnings"][0].endswith("clipped to xmin=1")


@pytest.mark.parametrize(
    ("box", "tag", "found"),
    [
        (("dog", 26, 18, W + 2, 24), "xmax", "xmax=34 on 'dog', 2 pixel(s) past the right edge"),
        (("dog", -2, 18, 6, 24), "xmin", "xmin=-2 on 'dog', 2 pixel(s) past the left edge"),
        (("dog", 2, 18, 6, H + 1), "ymax", "ymax=25 on 'dog', 1 pixel(s) past the bottom edge"),
    ],
)
def test_overshoot_of_a_pixel_or_more_is_an_error(
    tmp_path: Path, box: tuple, tag: str, found: str
) -> None:
    raw = write_voc(tmp_path / "voc", edit={"train/a.png": [("cat", 0, 0, 5, 4), box]})
    with pytest.raises(DataError) as err:
        normalize(raw, "voc")
    path = raw / "train" / "a.xml"
    assert err.value.file == path and err.value.field == f"object[1]/bndbox/{tag}"
    axis = tag[0]
    extent = W if axis == "x" else H
    assert err.value.expected.startswith(f"{axis}min and {axis}max within 0..{extent} ")
    assert found in err.value.found
    text = str(err.value)
    assert text.startswith(f"{path}, field 'object[1]/bndbox/{tag}': expected ")


def test_empty_or_swapped_box_is_an_error(tmp_path: Path) -> None:
    edit = {"train/b.png": [("cat", 4, 2, 4, 9)]}
    raw = write_voc(tmp_path / "voc", edit=edit)
    with pytest.raises(DataError, match="expected xmax > xmin") as err:
        normalize(raw, "voc")
    assert err.value.file == raw / "train" / "b.xml" and "xmin=4, xmax=4 on 'cat'" in str(
        err.value
    )
    # the same corners are a 1-pixel-wide box in the devkit convention
    raw = write_voc(tmp_path / "devkit", one_based=True, edit=edit)
    train = normalize(raw, "voc", voc_options("one_based"))["train"]
    assert [a.bbox for a in train.annotations if a.image_id == 2] == [(3.0, 1.0, 1.0, 8.0)]
    raw = write_voc(tmp_path / "swap", edit={"train/b.png": [("cat", 4, 9, 6, 2)]})
    with pytest.raises(DataError, match="expected ymax > ymin") as err:
        normalize(raw, "voc")
    assert err.value.field == "object[0]/bndbox/ymax"


def test_box_entirely_in_the_sub_pixel_margin_is_an_error(tmp_path: Path) -> None:
    raw = write_voc(tmp_path / "voc", edit={"train/b.png": [("cat", 32.2, 2, 32.7, 9)]})
    with pytest.raises(DataError, match="expected a box that overlaps the 32x24 image") as err:
        normalize(raw, "voc")
    assert err.value.file == raw / "train" / "b.xml"


# --- the normalize stage reads the switch from params.yaml -------------------------------------


def test_normalize_stage_uses_the_params_switch(project: Path, coco: dict, tmp_path: Path) -> None:
    raw = write_voc(project / "datasets" / "raw" / "edge", one_based=True)
    schema.save(coco["train"], tmp_path / "expected.json")

    proc = run_stage("data_processing.normalize", "datasets/raw/edge", "out", cwd=project)
    assert proc.returncode == 2, proc.stdout  # the file says 8..8 for a 1-pixel box: zero width
    assert "expected xmax > xmin" in proc.stderr and "test/d.xml" in proc.stderr

    edit_params(project / "params.yaml", normalize={"voc_coordinates": "one_based"})
    proc = run_stage("data_processing.normalize", "datasets/raw/edge", "out", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "normalize: edge (voc) -> out" in proc.stdout
    assert comparable(schema.load(project / "out" / "train.json")) == comparable(coco["train"])
    COCO(str(project / "out" / "train.json"))

    path = raw / "train" / "a.xml"
    path.write_text(path.read_text().replace("<xmax>32</xmax>", "<xmax>32.4</xmax>"))
    proc = run_stage("data_processing.normalize", "datasets/raw/edge", "out", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "warning: train/a.xml, field object[1]/bndbox/xmax: xmax=32.4" in proc.stderr
    assert comparable(schema.load(project / "out" / "train.json")) == comparable(coco["train"])

    edit_params(project / "params.yaml", normalize={"voc_coordinates": "devkit"})
    proc = run_stage("data_processing.normalize", "datasets/raw/edge", "out", cwd=project)
    assert proc.returncode == 2 and "'normalize.voc_coordinates'" in proc.stderr
