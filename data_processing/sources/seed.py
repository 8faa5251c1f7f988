"""The seed folder format: `train/` and `test/`, each with images and a `groundtruth.csv`.

    raw_dir/train/groundtruth.csv   filename,label   (one row per image)
    raw_dir/train/img1.png ...
    raw_dir/test/...

Reads image headers only. No writes. Every problem raises DataError naming file and row.
"""

import csv
import os
from pathlib import Path

from data_processing.errors import DataError
from data_processing.images import is_image, read_header
from data_processing.schema import Category, Dataset, Image, make_info

SPLITS = ("train", "test")
CSV_NAME = "groundtruth.csv"
COLUMNS = ("filename", "label")


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse a seed-format dataset into one Dataset per split.

    Args:
        raw_dir: folder holding `train/` and `test/`.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}, sharing one category list: the sorted union
        of labels (validation flags test labels that train lacks).
    """
    raw_dir = Path(raw_dir)
    name = name or raw_dir.name
    rows = {split: _read_csv(raw_dir / split) for split in SPLITS}
    names = sorted({label for split in rows.values() for _, label, _ in split}, key=_natural)
    categories = tuple(Category(id=i, name=n) for i, n in enumerate(names, start=1))
    cat_id = {c.name: c.id for c in categories}
    return {
        split: Dataset(
            info=make_info(name, split, "single", "seed"),
            categories=categories,
            images=_images(raw_dir, split, split_rows, cat_id),
        )
        for split, split_rows in rows.items()
    }


def _natural(label: str) -> tuple:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def _read_csv(split_dir: Path) -> list[tuple[str, str, int]]:
    """Return (filename, label, line number) rows, checked against the folder's images."""
    path = split_dir / CSV_NAME
    if not split_dir.is_dir():
        raise DataError(
            split_dir, f"a split folder with images and {CSV_NAME}", found="no such folder"
        )
    if not path.is_file():
        raise DataError(path, f"a CSV file with columns {','.join(COLUMNS)}", found="no such file")
    with path.open(encoding="utf-8-sig", newline="") as f:  # utf-8-sig strips a BOM
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if [h.lower() for h in header] != list(COLUMNS):
            raise DataError(
                path,
                f"header {','.join(COLUMNS)}",
                row=1,
                found=",".join(header) or "an empty file",
            )
        rows, seen = [], {}
        for line, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != 2:
                raise DataError(
                    path,
                    "2 columns (filename,label)",
                    row=line,
                    found=f"{len(record)} columns: {record}",
                )
            filename, label = record[0].strip(), record[1].strip()
            if not filename or not label:
                field = "filename" if not filename else "label"
                raise DataError(path, "a non-empty value", row=line, field=field)
            if filename in seen:
                raise DataError(
                    path,
                    "each filename once",
                    row=line,
                    field="filename",
                    found=f"{filename!r} again (first on row {seen[filename]})",
                )
            seen[filename] = line
            rows.append((filename, label, line))
    if not rows:
        raise DataError(path, "at least one image row", found="an empty split")
    _check_files(split_dir, path, rows)
    return rows


def _check_files(split_dir: Path, csv_path: Path, rows: list[tuple[str, str, int]]) -> None:
    with os.scandir(split_dir) as entries:  # scandir: no stat per file
        on_disk = {e.name for e in entries if e.is_file() and is_image(e.name)}
    lower = {n.lower(): n for n in on_disk}
    for filename, _, line in rows:
        if filename not in on_disk:
            close = lower.get(filename.lower())
            hint = f"did you mean {close!r}?" if close else None
            raise DataError(
                csv_path,
                f"an image file {split_dir / filename}",
                row=line,
                field="filename",
                found="no such file",
                hint=hint,
            )
    listed = {filename for filename, _, _ in rows}
    extra = sorted(on_disk - listed)
    if extra:
        raise DataError(
            split_dir / extra[0],
            f"a row for it in {csv_path}",
            found=f"{len(extra)} image(s) not listed: {extra[:5]}",
        )


def _images(raw_dir: Path, split: str, rows: list, cat_id: dict[str, int]) -> tuple[Image, ...]:
    images, folder = [], os.path.join(raw_dir, split)
    for image_id, (filename, label, line) in enumerate(sorted(rows), start=1):
        try:
            width, height, _ = read_header(os.path.join(folder, filename))
        except DataError as err:
            raise DataError(
                err.file, err.expected, row=f"{CSV_NAME}:{line}", found=err.found
            ) from None
        images.append(
            Image(
                id=image_id,
                file_name=f"{split}/{filename}",
                width=width,
                height=height,
                labels=(cat_id[label],),
                source=f"{split}/{CSV_NAME}:{line}",
            )
        )
    return tuple(images)
