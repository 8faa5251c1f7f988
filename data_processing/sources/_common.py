"""Helpers shared by the importers: safe paths, image and mask lookup, and the build.

Typed field access lives in _fields.py.

Reads image and mask headers and annotation text; writes nothing. Every failure is a
DataError naming the file, the row or element, the field and what was expected.
"""

import difflib
import functools
import os
import unicodedata
from dataclasses import replace
from pathlib import Path, PurePosixPath

from data_processing.core.errors import DataError
from data_processing.images import is_image_name, read_header
from data_processing.records import (
    Box,
    Record,
    RecordTable,
    Split,
    assemble,
    category_list,
    label_mode,
)
from data_processing.schema import Dataset

SPLITS = ("train", "test")
MASK_DIR = "masks"  # <split>/masks/<image stem>.png, where a format has no mask field of its own


@functools.lru_cache(maxsize=1024)
def _real_dir(path: str) -> str:
    """os.path.realpath of a folder, cached: one lookup per folder, not per image (the cache
    is cleared at every split_dir, so a parse sees the file system as it is)."""
    return os.path.realpath(path)


def inside(raw_dir: Path, path: Path, row: int | str | None = None, field: str | None = None):
    """Raise DataError unless `path`, with every link resolved, stays inside `raw_dir`."""
    root, text = _real_dir(os.fspath(raw_dir)), os.fspath(path)
    parent, name = os.path.split(text)
    if os.path.islink(text) or name in ("", ".", ".."):
        real = os.path.realpath(text)
    else:  # a plain file: only its folder can lead elsewhere
        real = os.path.join(_real_dir(parent or "."), name)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise DataError(
            path,
            f"a file inside the dataset folder {raw_dir}",
            row=row,
            field=field,
            found=f"a path that resolves to {real}",
            hint="copy the file into the dataset folder; links may not leave it",
        )


def split_dir(raw_dir: Path, split: str, what: str) -> Path:
    """Return raw_dir/split, or DataError when it is not a folder."""
    _real_dir.cache_clear()
    folder = Path(raw_dir) / split
    if not folder.is_dir():
        raise DataError(folder, f"a split folder with {what}", found="no such folder")
    return folder


def list_images(folder: Path) -> set[str]:
    """Names of the visible image files directly in `folder` (any case of extension)."""
    return images_in(folder)[0]


def images_in(folder: Path) -> tuple[set[str], set[str]]:
    """(image names, those that are regular files rather than links) in one directory scan;
    scandir gives both without a stat per file."""
    images, plain = set(), set()
    with os.scandir(folder) as entries:
        for e in entries:
            if is_image_name(e.name) and e.is_file():
                images.add(e.name)
                if not e.is_symlink():
                    plain.add(e.name)
    return images, plain


def suggest(name: str, candidates: set[str] | list[str]) -> str | None:
    """A "did you mean" for a name that is not there: Unicode form, case, then spelling."""
    nfc = {unicodedata.normalize("NFC", c): c for c in candidates}
    close = nfc.get(unicodedata.normalize("NFC", name))
    if close is not None and close != name:
        return (
            f"did you mean {close!r}? the names differ only in Unicode normalization "
            "(NFC vs NFD); write the name as it is on disk"
        )
    lower = {c.lower(): c for c in candidates}
    if (close := lower.get(name.lower())) is not None:
        return f"did you mean {close!r}?"
    close_list = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f"did you mean {close_list[0]!r}?" if close_list else None


def find_image(
    folder: Path, name: str, on_disk: set[str], listing: Path, row: int | str | None, field: str
) -> str:
    """Return `name` when it is an image in `folder`, else DataError with a "did you mean"."""
    if name in on_disk:
        return name
    raise DataError(
        listing,
        f"an image file {folder / name}",
        row=row,
        field=field,
        found="no such file",
        hint=suggest(name, on_disk),
    )


def require_listed(folder: Path, on_disk: set[str], listed: set[str], listing: Path) -> None:
    """DataError when an image in `folder` has no entry in `listing`."""
    extra = sorted(on_disk - listed)
    if extra:
        raise DataError(
            folder / extra[0],
            f"a row for it in {listing}",
            found=f"{len(extra)} image(s) not listed: {extra[:5]}",
        )


def image_size(
    raw_dir: Path, rel: str, row: int | str | None, plain: bool = False
) -> tuple[int, int]:
    """Upright (width, height) of raw_dir/rel from its header; errors carry `row`.

    `plain`: the caller knows the file is a regular file (images_in) in a folder it has
    checked with `inside`, so it cannot lead outside raw_dir.
    """
    path = os.path.join(raw_dir, rel)  # strings: pathlib costs more than the header read
    if not plain:
        inside(raw_dir, path, row=row)
    try:
        width, height, _ = read_header(path)
    except DataError as err:
        raise DataError(err.file, err.expected, row=row, found=err.found) from None
    return width, height


def mask_file(
    raw_dir: Path,
    rel: str,
    size: tuple[int, int],
    listing: Path,
    row: int | str | None,
    field: str,
) -> str:
    """Check a mask (inside raw_dir, readable, same size as its image; header only).

    Returns:
        The mask path relative to raw_dir, POSIX.
    """
    norm = PurePosixPath(os.path.normpath(rel).replace(os.sep, "/"))
    path = Path(raw_dir) / norm
    inside(raw_dir, path, row=row, field=field)
    if not path.is_file():
        raise DataError(listing, f"a mask file {path}", row=row, field=field, found="no such file")
    try:
        width, height, _ = read_header(path)
    except DataError as err:
        raise DataError(err.file, err.expected, row=row, field=field, found=err.found) from None
    if (width, height) != size:
        raise DataError(
            path,
            f"a {size[0]}x{size[1]} mask (the size of its image)",
            row=row,
            field=field,
            found=f"{width}x{height}",
        )
    return str(norm)


def conventional_mask(raw_dir: Path, split: str, image: str, size: tuple[int, int]) -> str | None:
    """The mask at <split>/masks/<image stem>.png when there is one (checked), else None."""
    rel = f"{split}/{MASK_DIR}/{Path(image).stem}.png"
    if not (Path(raw_dir) / rel).exists():
        return None
    return mask_file(raw_dir, rel, size, Path(raw_dir) / rel, None, "mask")


def box_file_record(
    raw_dir: Path,
    split: str,
    file: str,
    size: tuple[int, int],
    boxes: tuple[Box, ...] | None,
    listing: str | None,
) -> Record:
    """The record of a format with one annotation file per image (VOC, YOLO).

    No annotation file (boxes None) means unlabelled; an empty one means background
    (labels ()); boxes give the labels (assemble derives them). `listing` is the annotation
    file relative to raw_dir, or None, and becomes the record's source.
    """
    rel = f"{split}/{file}"
    return Record(
        rel,
        *size,
        labels=None if boxes is None else (() if not boxes else None),
        boxes=boxes or (),
        mask_file=conventional_mask(raw_dir, split, file, size),
        source=listing or rel,
    )


def build(
    name: str,
    source_format: str,
    splits: dict[str, Split],
    extra: tuple[str, ...] = (),
    warnings: dict[str, list[str]] | None = None,
) -> dict[str, Dataset]:
    """Assemble every split with one shared category list and label mode.

    Args:
        name: dataset name.
        source_format: the importer's name.
        splits: split name -> records: a list, or an iterator that reads them one at a time.
        extra: class names declared by the source even if unused (folders, classes.txt).
        warnings: split name -> fixes made while reading; stored as info["warnings"].

    Returns:
        split name -> Dataset.
    """
    splits = {split: RecordTable.of(records) for split, records in splits.items()}
    categories = category_list(splits, extra)
    mode = label_mode(splits)
    out = {}
    for split, records in splits.items():
        dataset = assemble(name, split, records, categories, mode, source_format)
        if warnings and warnings.get(split):
            dataset = replace(dataset, info={**dataset.info, "warnings": warnings[split]})
        out[split] = dataset
    return out
