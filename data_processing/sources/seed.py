"""The seed folder format: `train/` and `test/`, each with images and a `groundtruth.csv`.

    raw_dir/train/groundtruth.csv   one row per image, in one of two shapes:
        filename,label              label = one class, or several joined by ';' ("cat;dog")
        filename,cat,dog,...        one 0/1 column per class (multi-label "one-hot")
    raw_dir/train/img1.png ...      PNG, JPEG, BMP or GIF, any case of extension
    raw_dir/test/...

Fields are comma-separated; quote a class name that holds a comma ("big, red"). ';' is
reserved as the label separator. A one-hot row of all zeros is a background image (labels ()).
The label mode is "multi" when any image has other than one class (records.label_mode).

Reads the CSVs and image headers only. No writes. Every problem raises DataError naming file
and row.
"""

import csv
import io
import os
from pathlib import Path

from data_processing.errors import DataError
from data_processing.records import Record
from data_processing.schema import Dataset
from data_processing.sources._common import (
    SPLITS,
    build,
    check_unlisted,
    find_image,
    image_size,
    inside,
    read_text,
    scan_images,
    split_dir,
)

CSV_NAME = "groundtruth.csv"
COLUMNS = ("filename", "label")
LABEL_SEPARATOR = ";"
DELIMITERS = (";", "\t", "|")  # what a mis-saved CSV tends to use instead of ','

Row = tuple[str, tuple[str, ...], int]  # (filename, class names, line number)


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a seed dataset, else why not."""
    found = [s for s in SPLITS if (Path(raw_dir) / s / CSV_NAME).is_file()]  # any: parse says
    return None if found else f"no {' or '.join(f'{s}/{CSV_NAME}' for s in SPLITS)}"


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse a seed-format dataset into one Dataset per split.

    Args:
        raw_dir: folder holding `train/` and `test/`.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}, sharing one category list: the naturally sorted
        union of labels and one-hot columns (validation flags test labels that train lacks).
    """
    raw_dir = Path(raw_dir)
    records, columns = {}, []
    for split in SPLITS:
        folder = split_dir(raw_dir, split, f"images and {CSV_NAME}")
        rows, classes, plain = _read_csv(folder)
        inside(raw_dir, folder)  # then its plain files need no check of their own
        columns += classes
        records[split] = _records(raw_dir, split, rows, plain)
    return build(name or raw_dir.name, "seed", records, extra=tuple(columns))


def _read_csv(folder: Path) -> tuple[list[Row], list[str], set[str]]:
    """Return the rows, checked against the folder's images, the one-hot class columns, and
    the names of the folder's images that are regular files (not links)."""
    path = folder / CSV_NAME
    text = read_text(path, f"a CSV file with columns {','.join(COLUMNS)}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        classes = _classes(path, header)
        rows, seen = [], {}
        for line, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            row = _row(path, line, record, classes)
            if row[0] in seen:
                raise DataError(
                    path,
                    "each filename once",
                    row=line,
                    field="filename",
                    found=f"{row[0]!r} again (first on row {seen[row[0]]})",
                )
            seen[row[0]] = line
            rows.append(row)
    except csv.Error as err:
        raise DataError(path, "valid CSV", row=reader.line_num, found=str(err)) from None
    if not rows:
        raise DataError(path, "at least one image row", found="an empty split")
    on_disk, plain = scan_images(folder)
    for filename, _, line in rows:
        if filename not in on_disk:  # the common case needs no call
            find_image(folder, filename, on_disk, path, line, "filename")
    check_unlisted(folder, on_disk, set(seen), path)
    return rows, classes, plain


def _classes(path: Path, header: list[str]) -> list[str]:
    """[] for a filename,label header; the class columns of a one-hot header; else DataError."""
    lower = [h.lower() for h in header]
    if lower == list(COLUMNS):
        return []
    if len(header) >= 2 and lower[0] == "filename" and "label" not in lower[1:]:
        classes = header[1:]
        for i, name in enumerate(classes, start=2):
            if not name or name in classes[: i - 2]:
                found = "an empty name" if not name else f"{name!r} twice"
                field = f"column {i}"
                raise DataError(path, "one column per class", row=1, field=field, found=found)
        return classes
    used = [d for d in DELIMITERS if len(header) == 1 and d in header[0]]
    raise DataError(
        path,
        f"header {','.join(COLUMNS)} (or filename,<class>,... with 0/1 per class)",
        row=1,
        found=",".join(header) or "an empty file",
        hint=f"found delimiter {used[0]!r}; separate the columns with ','" if used else None,
    )


def _row(path: Path, line: int, record: list[str], classes: list[str]) -> Row:
    width = len(classes) + 1 if classes else 2
    if len(record) != width:
        names = f"filename,{','.join(classes)}" if classes else ",".join(COLUMNS)
        raise DataError(
            path, f"{width} columns ({names})", row=line, found=f"{len(record)} columns: {record}"
        )
    filename = record[0].strip()
    if not filename:
        raise DataError(path, "a non-empty value", row=line, field="filename")
    if classes:
        return filename, _one_hot(path, line, record[1:], classes), line
    label = record[1].strip()
    if not label:
        raise DataError(path, "a non-empty value", row=line, field="label")
    labels = tuple(part.strip() for part in label.split(LABEL_SEPARATOR))
    if not all(labels):
        raise DataError(
            path,
            f"class names separated by a single {LABEL_SEPARATOR!r}",
            row=line,
            field="label",
            found=repr(label),
        )
    return filename, labels, line


def _one_hot(path: Path, line: int, cells: list[str], classes: list[str]) -> tuple[str, ...]:
    for name, cell in zip(classes, cells, strict=True):
        if cell.strip() not in ("0", "1"):
            raise DataError(path, "0 or 1", row=line, field=name, found=repr(cell))
    return tuple(n for n, c in zip(classes, cells, strict=True) if c.strip() == "1")


def _records(raw_dir: Path, split: str, rows: list[Row], plain: set[str]) -> list[Record]:
    records, root = [], os.fspath(raw_dir)  # a str: joins with pathlib cost more than reads
    for filename, labels, line in rows:
        rel = f"{split}/{filename}"
        size = image_size(root, rel, row=f"{CSV_NAME}:{line}", plain=filename in plain)
        records.append(Record(rel, *size, labels=labels, source=f"{split}/{CSV_NAME}:{line}"))
    return records
