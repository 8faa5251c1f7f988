"""Class subfolders (torchvision's ImageFolder): the folder name is the image's one label.

    raw_dir/train/circle/a.png     -> file_name "train/circle/a.png", labels ("circle",)
    raw_dir/train/square/b.JPG
    raw_dir/test/<class>/...

Hidden folders and files (`.ipynb_checkpoints`, `.DS_Store`) are skipped; an empty class folder
still declares its class. An image directly in a split folder is an error (it has no class).

Reads folder listings and image headers. No writes.
"""

import os
from pathlib import Path

from data_processing.core.errors import DataError
from data_processing.records import Record
from data_processing.schema import Dataset
from data_processing.sources._common import SPLITS, build, image_size, list_images, split_dir


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like an image folder dataset, else why not."""
    folders = [Path(raw_dir) / s for s in SPLITS if (Path(raw_dir) / s).is_dir()]
    if not folders:  # one split is enough to recognise the layout; parse names what's missing
        return f"no {' or '.join(f'{s}/' for s in SPLITS)} folder"
    for folder in folders:
        if list_images(folder):
            return f"images directly in {folder.name}/, not in class subfolders"
        if not _class_dirs(folder):
            return f"no class subfolders in {folder.name}/"
    return None


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse class subfolders into one Dataset per split (single-label).

    Args:
        raw_dir: folder holding `train/<class>/` and `test/<class>/`.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}; every folder name becomes a category.
    """
    raw_dir = Path(raw_dir)
    records, classes = {}, []
    for split in SPLITS:
        folder = split_dir(raw_dir, split, "one subfolder of images per class")
        stray = sorted(list_images(folder))
        if stray:
            raise DataError(
                folder / stray[0],
                f"images inside class subfolders ({split}/<class>/<image>)",
                found=f"{len(stray)} image(s) directly in {split}/",
            )
        split_classes = _class_dirs(folder)
        classes += split_classes
        records[split] = [
            Record(
                rel := f"{split}/{cls}/{file}",
                *image_size(raw_dir, rel, row=None),
                labels=(cls,),
                source=rel,
            )
            for cls in split_classes
            for file in sorted(list_images(folder / cls))
        ]
        if not records[split]:
            raise DataError(folder, "at least one image in a class subfolder", found="none")
    return build(name or raw_dir.name, "imagefolder", records, extra=tuple(classes))


def _class_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
