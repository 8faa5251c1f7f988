"""YOLO (darknet) text labels beside the images, and a classes file at the root.

    raw_dir/classes.txt (or obj.names)   one class name per line; line k is class id k - 1
    raw_dir/train/a.png                  the image
    raw_dir/train/a.txt                  one box per line: "class cx cy w h", normalized 0..1
    raw_dir/train/masks/a.png            optional class mask (pixel = category id)
    raw_dir/test/...

An EMPTY label file is a background image (labelled, no class: labels []); a MISSING one is an
unlabelled image (labels None). Boxes convert to pixels as x = (cx - w/2) * width.

Reads the text files and image/mask headers. No writes.
"""

import os
from pathlib import Path

from data_processing.core.errors import DataError
from data_processing.records import Box, Record
from data_processing.schema import Dataset
from data_processing.sources._common import (
    SPLITS,
    box_file_record,
    build,
    image_size,
    inside,
    list_images,
    split_dir,
    suggest,
)
from data_processing.sources._fields import (
    parse_number,
    read_text,
)

CLASS_FILES = ("classes.txt", "obj.names")
FIELDS = ("class", "cx", "cy", "w", "h")


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a YOLO dataset, else why not."""
    if not any((Path(raw_dir) / f).is_file() for f in CLASS_FILES):
        return f"no {' or '.join(CLASS_FILES)}"
    return None


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse a YOLO dataset into one Dataset per split.

    Args:
        raw_dir: folder holding the classes file, `train/` and `test/`.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}; every listed class becomes a category.
    """
    raw_dir = Path(raw_dir)
    classes = _classes(raw_dir)
    records = {split: _read_split(raw_dir, split, classes) for split in SPLITS}
    return build(name or raw_dir.name, "yolo", records, extra=tuple(classes))


def _classes(raw_dir: Path) -> list[str]:
    path = next((raw_dir / f for f in CLASS_FILES if (raw_dir / f).is_file()), None)
    if path is None:
        raise DataError(raw_dir / CLASS_FILES[0], "one class name per line", found="no such file")
    inside(raw_dir, path)
    names = read_text(path, "one class name per line").rstrip("\r\n").splitlines()
    for line, cls in enumerate(names, start=1):
        if not cls.strip() or cls.strip() in [n.strip() for n in names[: line - 1]]:
            found = "an empty line" if not cls.strip() else f"{cls.strip()!r} again"
            raise DataError(path, "one unique class name per line", row=line, found=found)
    if not names:
        raise DataError(path, "one class name per line", found="an empty file")
    return [n.strip() for n in names]


def _read_split(raw_dir: Path, split: str, classes: list[str]) -> list[Record]:
    folder = split_dir(raw_dir, split, "images and their YOLO .txt label files")
    images = list_images(folder)
    by_stem: dict[str, str] = {}
    for file in sorted(images):
        stem = Path(file).stem
        if stem in by_stem:
            raise DataError(
                folder / file,
                "one image per name stem (the label file is <stem>.txt)",
                found=f"{by_stem[stem]!r} too",
            )
        by_stem[stem] = file
    with os.scandir(folder) as entries:
        texts = sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(".txt"))
    for text in texts:
        if Path(text).stem not in by_stem:
            hint = suggest(Path(text).stem, list(by_stem))
            expected = "an image with the same name stem"
            raise DataError(folder / text, expected, found="none", hint=hint)
    records = []
    for stem, file in sorted(by_stem.items()):
        rel = f"{split}/{file}"
        size = image_size(raw_dir, rel, row=None)
        label = folder / f"{stem}.txt"
        boxes = _read_labels(raw_dir, label, classes, size) if label.is_file() else None
        listing = f"{split}/{stem}.txt" if boxes is not None else None
        records.append(box_file_record(raw_dir, split, file, size, boxes, listing))
    return records


def _read_labels(
    raw_dir: Path, path: Path, classes: list[str], size: tuple[int, int]
) -> tuple[Box, ...]:
    inside(raw_dir, path)
    boxes = []
    for line, text in enumerate(read_text(path, "YOLO labels").splitlines(), start=1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DataError(path, "5 fields: class cx cy w h", row=line, found=repr(text[:60]))
        cls = parts[0]
        if not (cls.isascii() and cls.isdigit()) or int(cls) >= len(classes):
            raise DataError(
                path,
                f"a class id 0..{len(classes) - 1}",
                row=line,
                field="class",
                found=repr(cls),
                hint=f"the classes file lists {len(classes)} classes",
            )
        values = {}
        for key, text_value in zip(FIELDS[1:], parts[1:], strict=True):
            values[key] = value = parse_number(text_value, path, line, key)
            if not 0 <= value <= 1:
                expected = "a normalized value in 0..1"
                raise DataError(path, expected, row=line, field=key, found=text_value)
        cx, cy, w, h = (values[k] for k in FIELDS[1:])
        (width, height), name = size, classes[int(cls)]
        boxes.append(Box(name, (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
    return tuple(boxes)
