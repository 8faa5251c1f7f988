"""The seed's JSON meta format: `<split>/meta.json`, a list with one object per image.

    raw_dir/train/meta.json        [{"filename": "a.png", "class labels": ["circle"], ...}, ...]
    raw_dir/train/a.png ...        every image in the folder must have an entry
    raw_dir/train/masks/a.png      masks, wherever "segmentation mask" points (inside raw_dir)

Keys per entry: "filename" (required); "class labels" (a string or a list of strings; absent:
the classes of the boxes, or unlabelled without boxes; [] = background); "counts" ({class: n} or
a list of such, summed); "bounding boxes" (a list of {name, x1, x2, y1, y2}); "segmentation
mask" (a path relative to the split folder).

Box corners are continuous pixel coordinates, origin at the image's top-left corner: pixel i
covers [i, i+1), so x1=3, x2=4 is the 1-pixel-wide column 3 (w = x2 - x1). Swapped corners
(x2 < x1) are fixed and reported in info["warnings"] of that split.

Reads meta.json and image/mask headers. No writes.
"""

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
    unknown_keys,
)

META_NAME = "meta.json"
KEYS = ("filename", "class labels", "counts", "bounding boxes", "segmentation mask")
BOX_KEYS = ("name", "x1", "x2", "y1", "y2")


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a seed_json dataset, else why not."""
    found = [s for s in SPLITS if (Path(raw_dir) / s / META_NAME).is_file()]  # any: parse says
    return None if found else f"no {' or '.join(f'{s}/{META_NAME}' for s in SPLITS)}"


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse a seed_json dataset into one Dataset per split.

    Args:
        raw_dir: folder holding `train/` and `test/`, each with a meta.json and the images.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}; swapped-corner fixes in info["warnings"].
    """
    raw_dir = Path(raw_dir)
    records, warnings = {}, {}
    for split in SPLITS:
        warnings[split] = []
        records[split] = _read_split(raw_dir, split, warnings[split])
    return build(name or raw_dir.name, "seed_json", records, warnings=warnings)


def _read_split(raw_dir: Path, split: str, warnings: list[str]) -> list[Record]:
    folder = split_dir(raw_dir, split, f"images and {META_NAME}")
    path = folder / META_NAME
    inside(raw_dir, path)
    entries = load_json(path, f"a JSON list with one object per image ({', '.join(KEYS)})")
    if not isinstance(entries, list) or not entries:
        found = "an empty list" if entries == [] else f"{type(entries).__name__}"
        raise DataError(path, "a non-empty JSON list with one object per image", found=found)
    on_disk, seen, records = list_images(folder), {}, []
    for row, entry in enumerate(entries, start=1):
        filename = get(entry, "filename", str, path, row).strip()
        unknown_keys(entry, KEYS, path, row)
        find_image(folder, filename, on_disk, path, row, "filename")
        if filename in seen:
            raise DataError(
                path,
                "each filename once",
                row=row,
                field="filename",
                found=f"{filename!r} again (first in element {seen[filename]})",
            )
        seen[filename] = row
        records.append(_record(raw_dir, split, path, row, entry, filename, warnings))
    require_listed(folder, on_disk, set(seen), path)
    return records


def _record(
    raw_dir: Path, split: str, path: Path, row: int, entry: dict, filename: str, warnings: list
) -> Record:
    rel = f"{split}/{filename}"
    size = image_size(raw_dir, rel, row=f"{META_NAME}:{row}")
    labels = get(entry, "class labels", (str, list, type(None)), path, row, default=None)
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None:
        labels = tuple(_name(v, path, row, f"class labels[{i}]") for i, v in enumerate(labels))
    raw_boxes = get(entry, "bounding boxes", list, path, row, default=[])
    where = f"{split}/{META_NAME}, row {row}"  # relative: the output must not name the machine
    boxes = tuple(_box(b, path, row, i, warnings, where) for i, b in enumerate(raw_boxes))
    mask = get(entry, "segmentation mask", (str, type(None)), path, row, default=None)
    if mask is not None:
        mask = mask_file(raw_dir, f"{split}/{mask}", size, path, row, "segmentation mask")
    return Record(
        rel,
        *size,
        labels=labels,
        boxes=boxes,
        counts=_counts(entry, path, row),
        mask_file=mask,
        source=f"{split}/{META_NAME}:{row}",
    )


def _name(value: object, path: Path, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, "a non-empty class name", row=row, field=field, found=repr(value))
    return value.strip()


def _counts(entry: dict, path: Path, row: int) -> dict[str, int] | None:
    raw = get(entry, "counts", (dict, list, type(None)), path, row, default=None)
    if raw is None:
        return None
    counts: dict[str, int] = {}
    for i, part in enumerate(raw if isinstance(raw, list) else [raw]):
        prefix = f"counts[{i}]." if isinstance(raw, list) else "counts."
        if not isinstance(part, dict):
            raise DataError(path, "{class: count}", row=row, field=prefix[:-1], found=repr(part))
        for cls, n in part.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise DataError(
                    path, "a whole number >= 0", row=row, field=prefix + cls, found=repr(n)
                )
            key = _name(cls, path, row, prefix + cls)
            counts[key] = counts.get(key, 0) + n
    return counts


def _box(raw: object, path: Path, row: int, i: int, warnings: list[str], where: str) -> Box:
    prefix = f"bounding boxes[{i}]."
    name = _name(get(raw, "name", str, path, row, prefix=prefix), path, row, prefix + "name")
    unknown_keys(raw, BOX_KEYS, path, row)
    x1, x2, y1, y2 = (
        number(get(raw, k, (int, float), path, row, prefix=prefix), path, row, prefix + k)
        for k in ("x1", "x2", "y1", "y2")
    )
    for axis, lo, hi in (("x", x1, x2), ("y", y1, y2)):
        if hi < lo:
            warnings.append(
                f"{where}, field {prefix}{axis}1: swapped corners "
                f"{axis}1={lo:g} > {axis}2={hi:g}, read as {axis}1={hi:g}, {axis}2={lo:g}"
            )
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return Box(name=name, x=x1, y=y1, w=x2 - x1, h=y2 - y1)
