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
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_processing.core.errors import DataError
from data_processing.images import is_image_name
from data_processing.records import Record, RecordTable
from data_processing.schema import Dataset
from data_processing.sources._common import (
    SPLITS,
    build,
    find_image,
    image_size,
    inside,
    list_images,
    split_dir,
)
from data_processing.sources._fields import (
    read_text,
)

CSV_NAME = "groundtruth.csv"
COLUMNS = ("filename", "label")
LABEL_SEPARATOR = ";"
DELIMITERS = (";", "\t", "|")  # what a mis-saved CSV tends to use instead of ','

Row = tuple[str, tuple[str, ...], int]  # (filename, class names, line number)


@dataclass
class Rows:
    """A CSV's rows as columns: a split of a million rows is a million names, not a million
    tuples (normalize's memory, bench/scale.py)."""

    names: list[str] = field(default_factory=list)
    labels: list[tuple[str, ...]] = field(default_factory=list)  # shared: one per label set
    lines: array = field(default_factory=lambda: array("L"))
    plain: bytearray = field(default_factory=bytearray)  # 1: a regular file (not a link)


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
        rows, classes = _read_csv(folder)
        inside(raw_dir, folder)  # then its plain files need no check of their own
        columns += classes
        records[split] = RecordTable.of(_records(raw_dir, split, rows))
        del rows
    return build(name or raw_dir.name, "seed", records, extra=tuple(columns))


def _read_csv(folder: Path) -> tuple[Rows, list[str]]:
    """Return the rows, checked against the folder's images, and the one-hot class columns."""
    path = folder / CSV_NAME
    text = read_text(path, f"a CSV file with columns {','.join(COLUMNS)}")
    reader = csv.reader(io.StringIO(text, newline=""))
    del text  # the reader holds it
    rows, seen, shared = Rows(), {}, {}
    try:
        header = [h.strip() for h in next(reader, [])]
        classes = _classes(path, header)
        for line, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            filename, labels, _ = _row(path, line, record, classes)
            if filename in seen:
                raise DataError(
                    path,
                    "each filename once",
                    row=line,
                    field="filename",
                    found=f"{filename!r} again (first on row {rows.lines[seen[filename]]})",
                )
            seen[filename] = len(rows.names)
            rows.names.append(filename)
            rows.labels.append(shared.setdefault(labels, labels))
            rows.lines.append(line)
    except csv.Error as err:
        raise DataError(path, "valid CSV", row=reader.line_num, found=str(err)) from None
    if not rows.names:
        raise DataError(path, "at least one image row", found="an empty split")
    _match_files(folder, path, rows, seen)
    return rows, classes


def _match_files(folder: Path, path: Path, rows: Rows, seen: dict[str, int]) -> None:
    """Mark each row's file as found (and plain or a link) in one directory scan, holding no
    listing of its own; DataError for a row without its image, or an image without a row."""
    found = bytearray(len(rows.names))  # 0: missing, 1: a regular file, 2: a link
    unlisted = 0
    with os.scandir(folder) as entries:
        for e in entries:
            if is_image_name(e.name) and e.is_file():
                row = seen.get(e.name)
                if row is None:
                    unlisted += 1
                else:
                    found[row] = 2 if e.is_symlink() else 1
    missing = found.find(0)
    if missing >= 0:  # the rare case lists the folder again, for a "did you mean"
        on_disk = list_images(folder)
        find_image(folder, rows.names[missing], on_disk, path, rows.lines[missing], "filename")
    if unlisted:
        extra = sorted(set(list_images(folder)) - seen.keys())
        raise DataError(
            folder / extra[0],
            f"a row for it in {path}",
            found=f"{unlisted} image(s) not listed: {extra[:5]}",
        )
    rows.plain = found.translate(bytes([0, 1, 0]) + bytes(253))


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


def _records(raw_dir: Path, split: str, rows: Rows) -> Iterator[Record]:
    """Each row's record, its image header read; the row's name is let go as it is read."""
    root = os.fspath(raw_dir)  # a str: joins with pathlib cost more than reads
    for n, filename in enumerate(rows.names):
        rows.names[n] = None
        rel, line = f"{split}/{filename}", rows.lines[n]
        size = image_size(root, rel, row=f"{CSV_NAME}:{line}", plain=rows.plain[n] == 1)
        yield Record(rel, *size, labels=rows.labels[n], source=f"{split}/{CSV_NAME}:{line}")
