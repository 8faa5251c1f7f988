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
