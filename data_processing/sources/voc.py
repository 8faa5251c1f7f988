"""Pascal VOC XML, one file per image, beside the images in a folder per split.

    raw_dir/train/a.png            the image
    raw_dir/train/a.xml            <annotation><filename>a.png</filename><size>...</size>
                                     <object><name>circle</name><bndbox><xmin>...
    raw_dir/train/masks/a.png      optional class mask (pixel = category id)
    raw_dir/test/...

This is the per-split layout of Roboflow-style VOC exports (no ImageSets lists). VOC box
coordinates are 1-based and inclusive: xmin=1, xmax=1 is the 1-pixel column 0, so
x = xmin - 1 and w = xmax - xmin + 1. An XML without objects is a background image
(labels []); an image without an XML is unlabelled. `<size>`, when given, must match the image.

Reads the XML files and image/mask headers. No writes.
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from data_processing.errors import DataError
from data_processing.records import Box, Record
from data_processing.schema import Dataset
from data_processing.sources._common import (
    SPLITS,
    box_file_record,
    build,
    find_image,
    image_size,
    inside,
    list_images,
    parse_number,
    read_text,
    split_dir,
)


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a VOC dataset, else why not."""
    folders = [Path(raw_dir) / s for s in SPLITS]
    if any(f.is_dir() and _xml_files(f) for f in folders):  # any: parse names what's missing
        return None
    return f"no .xml files in {' or '.join(f'{s}/' for s in SPLITS)}"


def parse(raw_dir: Path, name: str | None = None) -> dict[str, Dataset]:
    """Parse per-split VOC XML files into one Dataset per split.

    Args:
        raw_dir: folder holding `train/` and `test/`, each with images and their XML files.
        name: dataset name for `info` (default: the folder name).

    Returns:
        {"train": Dataset, "test": Dataset}.
    """
    raw_dir = Path(raw_dir)
    records = {split: _read_split(raw_dir, split) for split in SPLITS}
    return build(name or raw_dir.name, "voc", records)


def _xml_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        names = (e.name for e in entries if e.is_file() and not e.name.startswith("."))
        return sorted(n for n in names if n.lower().endswith(".xml"))


def _read_split(raw_dir: Path, split: str) -> list[Record]:
    folder = split_dir(raw_dir, split, "images and their VOC .xml files")
    on_disk, by_image = list_images(folder), {}
    for xml_name in _xml_files(folder):
        path = folder / xml_name
        inside(raw_dir, path)
        file, boxes, declared = _read_xml(path, folder, on_disk)
        if file in by_image:
            raise DataError(
                path,
                "one XML file per image",
                field="filename",
                found=f"{file!r}, also described by {by_image[file][0]}",
            )
        by_image[file] = (xml_name, boxes, declared)
    records = []
    for file in sorted(on_disk):
        rel = f"{split}/{file}"
        xml_name, boxes, declared = by_image.get(file, (None, None, None))
        size = image_size(raw_dir, rel, row=xml_name)
        if xml_name is not None:
            _check_size(folder / xml_name, size, declared)
        listing = f"{split}/{xml_name}" if xml_name else None
        records.append(box_file_record(raw_dir, split, file, size, boxes, listing))
    return records


def _load(path: Path) -> ET.Element:
    text = read_text(path, "a Pascal VOC XML file")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DataError(
            path, "well-formed XML", row=err.position[0], found=str(err).split(":")[0]
        ) from None
    if root.tag != "annotation":
        raise DataError(path, "an <annotation> root element", found=f"<{root.tag}>")
    return root


def _read_xml(
    path: Path, folder: Path, on_disk: set[str]
) -> tuple[str, tuple[Box, ...], tuple[str | None, str | None]]:
    """The image's file name, its boxes, and the <size> width and height as written."""
    root = _load(path)
    file = (root.findtext("filename") or "").strip()
    if not file:
        raise DataError(path, "the image's file name", field="filename", found="nothing")
    find_image(folder, file, on_disk, path, None, "filename")
    boxes = []
    for k, obj in enumerate(root.findall("object")):
        pre = f"object[{k}]"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(path, "a class name", field=f"{pre}/name", found="nothing")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(path, "a <bndbox>", field=f"{pre}/bndbox", found="nothing")
        xmin, ymin, xmax, ymax = (
            parse_number(box.findtext(tag), path, None, f"{pre}/bndbox/{tag}")
            for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        # 1-based inclusive pixel indices -> COCO [x, y, w, h]: xmin=xmax=1 is x=0, w=1
        boxes.append(Box(name, xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1))
    declared = (root.findtext("size/width"), root.findtext("size/height"))
    return file, tuple(boxes), declared


def _check_size(path: Path, size: tuple[int, int], declared: tuple) -> None:
    for tag, actual, text in zip(("width", "height"), size, declared, strict=True):
        if text is not None and text.strip() and text.strip() != str(actual):
            raise DataError(
                path,
                f"the image's {tag} {actual} (upright, from its header)",
                field=f"size/{tag}",
                found=text.strip(),
            )
