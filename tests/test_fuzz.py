"""Property-based fuzzing: whatever a CSV, JSON, XML or txt annotation file holds, each importer
either parses it or raises DataError, never another exception.

Each test overwrites one file of a small valid dataset (built once per module) with generated
content: arbitrary bytes, token soups close to the real format, or random edits of the valid
file. Examples are bounded (max_examples) so the file runs in seconds.
"""

import json
from pathlib import Path

import pytest
import shapes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_processing import sources
from data_processing.core.errors import DataError

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,  # and nothing is written into the checkout (.hypothesis/)
)


def parses_or_data_error(fmt: str, raw: Path) -> None:
    try:
        splits = sources.get(fmt).parse(raw)
    except DataError as err:
        where = Path(err.file).resolve()
        assert where == raw.resolve() or raw.resolve() in where.parents, err.file
        assert err.expected and str(err).startswith(f"{err.file}") and "expected" in str(err)
        return
    assert set(splits) == {"train", "test"}
    for dataset in splits.values():  # what parsed names only files that are there
        assert all((raw / image.file_name).is_file() for image in dataset.images)


META = Path("train") / "meta.json"
INSTANCES = Path("annotations") / "instances_train.json"


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root, samples = tmp_path_factory.mktemp("fuzz"), shapes.generate(n_train=3, n_test=2)
    return {
        "seed": shapes.write_seed(root / "seed", samples),
        "seed_json": shapes.write_seed_json(root / "seed_json", samples),
        "coco": shapes.write_coco(root / "coco", samples),
        "voc": shapes.write_voc(root / "voc", samples),
        "yolo": shapes.write_yolo(root / "yolo", samples),
    }


@pytest.fixture(scope="module")
def valid(raw: dict[str, Path]) -> dict[str, str]:
    """The untouched JSON files, read before any test overwrites them."""
    return {
        "seed_json": (raw["seed_json"] / META).read_text(),
        "coco": (raw["coco"] / INSTANCES).read_text(),
    }


def edits(valid: str) -> st.SearchStrategy[str]:
    """The valid text with one slice replaced by a short string."""
    n = len(valid)
    return st.tuples(
        st.integers(0, n), st.integers(0, 8), st.text(max_size=6) | st.sampled_from(TOKENS)
    ).map(lambda e: valid[: e[0]] + e[2] + valid[e[0] + e[1] :])


TOKENS = [
    ",",
    ";",
    '"',
    "\n",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ":",
    "<",
    ">",
    "/",
    "-1",
    "1e999",
    "NaN",
    "null",
    "0",
    "1",
    "2.5",
    "train_000.png",
    "circle",
    "\ufeff",
    "é",
    "../",
]
JSON_KEYS = [
    "filename",
    "class labels",
    "counts",
    "bounding boxes",
    "segmentation mask",
    "name",
    "x1",
    "x2",
    "y1",
    "y2",
    "images",
    "annotations",
    "categories",
    "id",
    "file_name",
    "image_id",
    "category_id",
    "bbox",
    "labels",
    "mask_file",
    "width",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["train_000.png", "train_001.JPG", "circle", "masks/train_000.png", ""])
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=25,
)


def soup(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(tokens) | st.text(max_size=4), max_size=40).map("".join)


# seed CSV


@FUZZ
@given(content=st.binary(max_size=200))
def test_seed_csv_bytes(raw: dict, content: bytes) -> None:
    (raw["seed"] / "train" / "groundtruth.csv").write_bytes(content)
    parses_or_data_error("seed", raw["seed"])


CSV = "filename,label\ntrain_000.png,circle\ntrain_001.JPG,square\ntrain_002.bmp,triangle\n"


@FUZZ
@given(content=edits(CSV) | soup(["filename", "label", "circle", "train_000.png", *TOKENS]))
def test_seed_csv_text(raw: dict, content: str) -> None:
    (raw["seed"] / "train" / "groundtruth.csv").write_text(content, encoding="utf-8")
    parses_or_data_error("seed", raw["seed"])


# seed_json and coco JSON


@FUZZ
@given(data=st.data())
def test_seed_json(raw: dict, valid: dict, data: st.DataObject) -> None:
    entries = json.loads(valid["seed_json"])
    content = data.draw(
        edits(valid["seed_json"])
        | JSON_VALUES.map(json.dumps)
        | st.lists(JSON_VALUES, min_size=1, max_size=3).map(lambda v: json.dumps(entries + v))
        | st.tuples(st.integers(0, len(entries) - 1), st.sampled_from(JSON_KEYS), JSON_VALUES).map(
            lambda e: json.dumps([{**x, e[1]: e[2]} if x is entries[e[0]] else x for x in entries])
        )
    )
    (raw["seed_json"] / META).write_text(content, encoding="utf-8")
    parses_or_data_error("seed_json", raw["seed_json"])


@FUZZ
@given(data=st.data())
def test_coco_json(raw: dict, valid: dict, data: st.DataObject) -> None:
    doc = json.loads(valid["coco"])
    section = data.draw(st.sampled_from(["images", "annotations", "categories"]))
    content = data.draw(
        edits(valid["coco"])
        | JSON_VALUES.map(json.dumps)
        | st.tuples(st.sampled_from(JSON_KEYS), JSON_VALUES).map(
            lambda e: json.dumps({**doc, section: [{**x, e[0]: e[1]} for x in doc[section]]})
        )
        | JSON_VALUES.map(lambda v: json.dumps({**doc, section: v}))
    )
    (raw["coco"] / INSTANCES).write_text(content, encoding="utf-8")
    parses_or_data_error("coco", raw["coco"])


# voc XML


@FUZZ
@given(data=st.data())
def test_voc_xml(raw: dict, data: st.DataObject) -> None:
    valid = shapes.voc_xml("train_000.png", (shapes.Shape("circle", 2, 3, 4, 5),))
    tags = [
        "<annotation>",
        "</annotation>",
        "<object>",
        "</object>",
        "<name>",
        "</name>",
        "<bndbox>",
        "</bndbox>",
        "<xmin>",
        "</xmin>",
        "<filename>",
        "</filename>",
        "<size><width>32</width><height>7</height></size>",
        "&amp;",
        "<!--",
        "-->",
    ]
    content = data.draw(edits(valid) | soup(tags + TOKENS))
    (raw["voc"] / "train" / "train_000.xml").write_text(content, encoding="utf-8")
    parses_or_data_error("voc", raw["voc"])


# yolo txt


@FUZZ
@given(content=soup(["0", "1", "2", "3", "0.5", "0.25", "1.5", "-0.1", "inf", " ", "\n", "x"]))
def test_yolo_labels(raw: dict, content: str) -> None:
    (raw["yolo"] / "train" / "train_000.txt").write_text(content, encoding="utf-8")
    parses_or_data_error("yolo", raw["yolo"])


@FUZZ
@given(content=edits("circle\nsquare\ntriangle\n") | st.text(max_size=30))
def test_yolo_classes(raw: dict, content: str) -> None:
    (raw["yolo"] / "train" / "train_000.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (raw["yolo"] / "classes.txt").write_text(content, encoding="utf-8")
    parses_or_data_error("yolo", raw["yolo"])
