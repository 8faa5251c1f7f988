"""COCO instances JSON, one file per split, images in a folder per split.

    raw_dir/annotations/instances_train.json   {"images", "annotations", "categories"}
    raw_dir/train/a.png ...                    file_name: an image directly in <split>/
    raw_dir/test/...

Categories are matched by name (COCO ids may be anything). Each annotation's `bbox` is COCO's
[x, y, w, h] in pixels. Two optional image fields from the project format are read: `labels`
(category ids: the image-level classes, [] = background) and `mask_file` (relative to
<split>/). An image without `labels` gets the classes of its boxes; with neither it is
unlabelled. `width`/`height`, when given, must match the (upright) image header.

Reads the JSON and image/mask headers. No writes.
"""

from dataclasses import replace
from pathlib import Path

from data_processing.core.errors import DataError
from data_processing.records import Box, Record
from data_processing.schema import Dataset
from data_processing.sources._common import (
    SPLITS,
    build,
    find_image,
    image_size,
    inside,
    list_images,
    mask_file,
    require_listed,
    split_dir,
)
from data_processing.sources._fields import (
    get,
    load_json,
    number,
)

ANNOTATIONS = "annotations/instances_{split}.json"


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a COCO dataset, else why not."""
    paths = [ANNOTATIONS.format(split=s) for s in SPLITS]
    found = [p for p in paths if (Path(raw_dir) / p).is_file()]  # any: parse names what's missing
    return None if found else f"no {' or '.join(paths)}"


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse COCO instances files into one Dataset per split.

    Args:
        raw_dir: folder holding `annotations/instances_<split>.json` and `<split>/` images.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}; every COCO category becomes a category.
    """
    raw_dir = Path(raw_dir)
    records, classes = {}, []
    for split in SPLITS:
        records[split], split_classes = _read_split(raw_dir, split)
        classes += split_classes
    return build(name or raw_dir.name, "coco", records, extra=tuple(classes))


def _read_split(raw_dir: Path, split: str) -> tuple[list[Record], list[str]]:
    path = raw_dir / ANNOTATIONS.format(split=split)
    inside(raw_dir, path)
    data = load_json(path, "a COCO instances JSON file")
    folder = split_dir(raw_dir, split, "the images listed in " + path.name)
    cats = _categories(path, get(data, "categories", list, path, None))
    boxes, first = _boxes(path, get(data, "annotations", list, path, None), cats)
    on_disk, records, seen, ids = list_images(folder), [], {}, set()
    for row, image in enumerate(get(data, "images", list, path, None), start=1):
        pre = f"images[{row - 1}]."
        image_id = get(image, "id", int, path, row, prefix=pre)
        file = get(image, "file_name", str, path, row, prefix=pre)
        find_image(folder, file, on_disk, path, row, pre + "file_name")
        if file in seen or image_id in ids:
            field, value = ("file_name", file) if file in seen else ("id", image_id)
            found = repr(value)
            raise DataError(path, f"each {field} once", row=row, field=pre + field, found=found)
        seen[file] = row
        ids.add(image_id)
        record = _record(raw_dir, split, path, row, image, cats)
        records.append(replace(record, boxes=tuple(boxes.pop(image_id, ()))))
    if boxes:  # annotations left over point at no image
        image_id = next(iter(boxes))
        raise DataError(
            path,
            "an image_id listed in images",
            field=f"annotations[{first[image_id]}].image_id",
            found=str(image_id),
        )
    require_listed(folder, on_disk, set(seen), path)
    return records, list(cats.values())


def _record(
    raw_dir: Path, split: str, path: Path, row: int, image: dict, cats: dict[int, str]
) -> Record:
    """One image's record, without its boxes (file_name already checked)."""
    pre, file = f"images[{row - 1}].", image["file_name"]
    size = image_size(raw_dir, f"{split}/{file}", row=f"{path.name}:{row}")
    _check_size(image, size, path, row, pre)
    labels = get(image, "labels", (list, type(None)), path, row, default=None, prefix=pre)
    if labels is not None:
        labels = tuple(_cat(cats, c, path, row, f"{pre}labels") for c in labels)
    mask = get(image, "mask_file", (str, type(None)), path, row, default=None, prefix=pre)
    if mask is not None:
        mask = mask_file(raw_dir, f"{split}/{mask}", size, path, row, pre + "mask_file")
    source = f"{ANNOTATIONS.format(split=split)}:{row}"
    return Record(f"{split}/{file}", *size, labels=labels, mask_file=mask, source=source)


def _categories(path: Path, raw: list) -> dict[int, str]:
    cats: dict[int, str] = {}
    for i, cat in enumerate(raw):
        pre = f"categories[{i}]."
        cat_id = get(cat, "id", int, path, None, prefix=pre)
        name = get(cat, "name", str, path, None, prefix=pre).strip()
        if not name or cat_id in cats or name in cats.values():
            found = "an empty name" if not name else f"id {cat_id} / name {name!r} again"
            raise DataError(path, "a unique id and name", field=pre[:-1], found=found)
        cats[cat_id] = name
    return cats


def _cat(cats: dict[int, str], cat_id: object, path: Path, row: int | None, field: str) -> str:
    if isinstance(cat_id, int) and not isinstance(cat_id, bool) and cat_id in cats:
        return cats[cat_id]
    raise DataError(
        path,
        f"a category id from categories {sorted(cats)}",
        row=row,
        field=field,
        found=repr(cat_id),
    )


def _boxes(
    path: Path, raw: list, cats: dict[int, str]
) -> tuple[dict[int, list[Box]], dict[int, int]]:
    """Boxes by image id, and each image id's first annotation index (for error messages)."""
    boxes: dict[int, list[Box]] = {}
    first: dict[int, int] = {}
    for i, ann in enumerate(raw):
        pre = f"annotations[{i}]."
        image_id = get(ann, "image_id", int, path, None, prefix=pre)
        cat_id = get(ann, "category_id", int, path, None, prefix=pre)
        name = _cat(cats, cat_id, path, None, pre + "category_id")
        bbox = get(ann, "bbox", list, path, None, prefix=pre)
        if len(bbox) != 4:
            raise DataError(path, "[x, y, w, h]", field=pre + "bbox", found=repr(bbox))
        x, y, w, h = (number(v, path, None, f"{pre}bbox[{k}]") for k, v in enumerate(bbox))
        boxes.setdefault(image_id, []).append(Box(name, x, y, w, h))
        first.setdefault(image_id, i)
    return boxes, first


def _check_size(image: dict, size: tuple[int, int], path: Path, row: int, pre: str) -> None:
    for key, actual in zip(("width", "height"), size, strict=True):
        given = get(image, key, (int, type(None)), path, row, default=None, prefix=pre)
        if given is not None and given != actual:
            raise DataError(
                path,
                f"the image's {key} {actual} (upright, from its header)",
                row=row,
                field=pre + key,
                found=str(given),
            )
