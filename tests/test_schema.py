"""The normalized format: deterministic, COCO-compatible (pycocotools), self-checking."""

from pathlib import Path

from pycocotools.coco import COCO

from data_processing import schema
from data_processing.sources import seed


def test_seed_to_json_loads_in_pycocotools(seed_dataset: Path, tmp_path: Path) -> None:
    splits = seed.parse(seed_dataset)
    schema.save(splits["train"], tmp_path / "train.json")
    coco = COCO(str(tmp_path / "train.json"))
    assert len(coco.getImgIds()) == 24
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == [1, 2, 3]
    first = coco.loadImgs([1])[0]
    assert (first["width"], first["height"]) == (8, 8)
    assert first["labels"] == [1] and first["file_name"] == "train/bar_000.png"


def test_roundtrip_and_byte_identical(seed_dataset: Path, tmp_path: Path) -> None:
    dataset = seed.parse(seed_dataset)["test"]
    schema.save(dataset, tmp_path / "a.json")
    schema.save(schema.load(tmp_path / "a.json"), tmp_path / "b.json")
    schema.save(seed.parse(seed_dataset)["test"], tmp_path / "c.json")
    assert schema.load(tmp_path / "a.json") == dataset
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_validate_finds_dangling_ids(seed_dataset: Path) -> None:
    dataset = seed.parse(seed_dataset)["train"]
    broken = schema.Dataset(
        info=dataset.info,
        categories=dataset.categories,
        images=dataset.images,
        annotations=(schema.Annotation(1, 999, 7, (0, 0, 1, 1), 1.0),),
    )
    problems = schema.validate(broken)
    assert any("dangling image_id 999" in p for p in problems)
    assert any("dangling category_id 7" in p for p in problems)
    assert schema.validate(dataset) == []


def test_class_counts(seed_dataset: Path) -> None:
    counts = schema.class_counts(seed.parse(seed_dataset)["test"])
    assert counts == {"bar": 4, "column": 4, "diagonal": 4}


def test_image_table_reads_as_the_images_it_holds(seed_dataset: Path, tmp_path: Path) -> None:
    """Normalize keeps a split as columns (schema.ImageTable); read back, every Image, slice,
    negative index and comparison is what a tuple of the same Images gives."""
    table = seed.parse(seed_dataset)["train"].images
    assert isinstance(table, schema.ImageTable)
    images = tuple(table)
    assert [i.id for i in images] == list(range(1, len(images) + 1))
    assert table == images and images == tuple(table[k] for k in range(len(table)))
    assert table[-1] == images[-1] and table[2:5] == images[2:5]
    rows = [i.source.split(":") for i in images]  # "<file>:<row>", held as file id and row
    assert {f for f, _ in rows} == {"train/groundtruth.csv"}
    assert sorted(int(r) for _, r in rows) == list(range(2, len(images) + 2))
    loaded = schema.load(_saved(seed.parse(seed_dataset)["train"], tmp_path))
    assert loaded.images == images and table == loaded.images
    assert table != images[:-1]


def _saved(dataset: schema.Dataset, folder: Path) -> Path:
    schema.save(dataset, folder / "split.json")
    return folder / "split.json"
