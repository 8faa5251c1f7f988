"""Pascal VOC XML, one file per image, beside the images in a folder per split.

    raw_dir/train/a.png            the image
    raw_dir/train/a.xml            <annotation><filename>a.png</filename><size>...</size>
                                     <object><name>circle</name><bndbox><xmin>...
    raw_dir/train/masks/a.png      optional class mask (pixel = category id)
    raw_dir/test/...

This is the per-split layout of Roboflow-style VOC exports (no ImageSets lists). Box corners
are read, by default, as continuous 0-based coordinates, as Datumaro, CVAT and globox write
them: x = xmin, w = xmax - xmin (a box over the whole 32-pixel-wide image is xmin=0, xmax=32).
`coordinates="one_based"` (params `normalize.voc_coordinates`) reads the VOC devkit's 1-based
inclusive pixel indices instead: x = xmin - 1, w = xmax - xmin + 1 (xmin=xmax=1 is column 0).
A corner less than one pixel outside the image is clipped to it and reported in
info["warnings"]; one further out is an error. An XML without objects is a background image
(labels []); an image without an XML is unlabelled. `<size>`, when given, must match the image.

Reads the XML files and image/mask headers. No writes.
"""

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from data_processing.core.errors import DataError
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
    split_dir,
)
from data_processing.sources._fields import (
    parse_number,
    read_text,
)

ZERO_BASED, ONE_BASED = "zero_based", "one_based"
COORDINATES = (ZERO_BASED, ONE_BASED)  # params normalize.voc_coordinates
CORNERS = ("xmin", "ymin", "xmax", "ymax")

# (class name, object index, xmin, ymin, xmax, ymax) as written in the XML
RawBox = tuple[str, int, float, float, float, float]


def matches(raw_dir: Path) -> str | None:
    """None when raw_dir looks like a VOC dataset, else why not."""
    folders = [Path(raw_dir) / s for s in SPLITS]
    if any(f.is_dir() and _xml_files(f) for f in folders):  # any: parse names what's missing
        return None
    return f"no .xml files in {' or '.join(f'{s}/' for s in SPLITS)}"


def parse(
    raw_dir: Path, name: str | None = None, coordinates: str = ZERO_BASED
) -> dict[str, Dataset]:
    """Parse per-split VOC XML files into one Dataset per split.

    Args:
        raw_dir: folder holding `train/` and `test/`, each with images and their XML files.
        name: dataset name for `info` (default: the folder name).
        coordinates: "zero_based" (continuous corners: Datumaro, CVAT, globox) or
            "one_based" (the VOC devkit's 1-based inclusive pixel indices).

    Returns:
        {"train": Dataset, "test": Dataset}; sub-pixel clipping in info["warnings"].
    """
    if coordinates not in COORDINATES:
        raise ValueError(f"unknown VOC coordinates {coordinates!r}; choose from {COORDINATES}")
    raw_dir = Path(raw_dir)
    records, warnings = {}, {}
    for split in SPLITS:
        warnings[split] = []
        records[split] = _read_split(raw_dir, split, coordinates, warnings[split])
    return build(name or raw_dir.name, "voc", records, warnings=warnings)


def _xml_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        names = (e.name for e in entries if e.is_file() and not e.name.startswith("."))
        return sorted(n for n in names if n.lower().endswith(".xml"))


def _read_split(raw_dir: Path, split: str, coordinates: str, warnings: list[str]) -> list[Record]:
    folder = split_dir(raw_dir, split, "images and their VOC .xml files")
    on_disk, by_image = list_images(folder), {}
    for xml_name in _xml_files(folder):
        path = folder / xml_name
        inside(raw_dir, path)
        file, raw_boxes, declared = _read_xml(path, folder, on_disk)
        if file in by_image:
            raise DataError(
                path,
                "one XML file per image",
                field="filename",
                found=f"{file!r}, also described by {by_image[file][0]}",
            )
        by_image[file] = (xml_name, raw_boxes, declared)
    records = []
    for file in sorted(on_disk):
        rel = f"{split}/{file}"
        xml_name, raw_boxes, declared = by_image.get(file, (None, None, None))
        size = image_size(raw_dir, rel, row=xml_name)
        boxes = None
        if xml_name is not None:
            path = folder / xml_name
            _check_size(path, size, declared)
            where = f"{split}/{xml_name}"
            boxes = tuple(_box(b, size, coordinates, path, where, warnings) for b in raw_boxes)
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
) -> tuple[str, tuple[RawBox, ...], tuple[str | None, str | None]]:
    """The image's file name, its boxes as written, and the <size> width and height."""
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
            parse_number(box.findtext(tag), path, None, f"{pre}/bndbox/{tag}") for tag in CORNERS
        )
        boxes.append((name, k, xmin, ymin, xmax, ymax))
    declared = (root.findtext("size/width"), root.findtext("size/height"))
    return file, tuple(boxes), declared


def _box(
    raw: RawBox,
    size: tuple[int, int],
    coordinates: str,
    path: Path,
    where: str,
    warnings: list[str],
) -> Box:
    """One box in COCO [x, y, w, h], its corners checked against the image's header size.

    zero_based: continuous corners (x = xmin, w = xmax - xmin); one_based: the devkit's
    inclusive pixel indices (x = xmin - 1, w = xmax - xmin + 1). A corner less than one pixel
    outside the image is clipped (a warning); farther out, or xmax <= xmin, is a DataError.
    """
    name, k, *written = raw
    shift = 1.0 if coordinates == ONE_BASED else 0.0  # min corners: written = continuous + shift
    offset = {"xmin": shift, "ymin": shift, "xmax": 0.0, "ymax": 0.0}
    corners = {t: v - offset[t] for t, v in zip(CORNERS, written, strict=True)}
    convention = f"{coordinates.replace('_', '-')} corners"
    fixes = []
    for axis, extent in zip("xy", size, strict=True):
        lo, hi = f"{axis}min", f"{axis}max"
        if corners[hi] <= corners[lo]:
            raise DataError(
                path,
                f"{hi} {'>=' if shift else '>'} {lo} ({convention})",
                field=f"object[{k}]/bndbox/{hi}",
                found=f"{lo}={corners[lo] + shift:g}, {hi}={corners[hi]:g} on {name!r}",
                hint="the VOC devkit writes a 1-pixel box as xmin = xmax: for such files set "
                "params normalize.voc_coordinates: one_based"
                if not shift and corners[hi] == corners[lo]
                else None,
            )
        for tag in (lo, hi):
            value = corners[tag]
            corners[tag] = min(max(value, 0.0), float(extent))
            if corners[tag] != value:
                field = f"object[{k}]/bndbox/{tag}"
                out = _Outside(path, where, field, name, size, convention, shift)
                fixes.append(out.check(tag, value, extent, offset[tag], (lo, hi)))
        if corners[hi] <= corners[lo]:  # both corners clipped onto the same edge
            raise DataError(
                path,
                f"a box that overlaps the {size[0]}x{size[1]} image",
                field=f"object[{k}]/bndbox/{lo}",
                found=f"{lo}, {hi} both outside it on {name!r}",
            )
    warnings += fixes
    x0, y0, x1, y1 = (corners[t] for t in CORNERS)
    return Box(name, x0, y0, x1 - x0, y1 - y0)


@dataclass
class _Outside:
    """A corner outside the image: clipped with a warning when less than a pixel out."""

    path: Path
    where: str  # split/file, for the warning
    field: str
    name: str
    size: tuple[int, int]
    convention: str
    shift: float  # 1.0 for one-based corners

    def check(self, tag: str, value: float, extent: int, offset: float, pair) -> str:
        """The warning for clipping `value` (continuous) into 0..extent; DataError when it is
        a pixel or more outside."""
        over = max(-value, value - extent)  # pixels outside the image
        edge = ("left", "right") if tag[0] == "x" else ("top", "bottom")
        edge = edge[value > 0]
        clipped = min(max(value, 0.0), float(extent))
        w, h = self.size
        if over >= 1:
            raise DataError(
                self.path,
                f"{pair[0]} and {pair[1]} within {self.shift:g}..{extent} ({self.convention} on "
                f"the {w}x{h} image; less than 1 pixel beyond is clipped)",
                field=self.field,
                found=f"{tag}={value + offset:g} on {self.name!r}, {over:g} pixel(s) past "
                f"the {edge} edge",
                hint="exactly 1 pixel out: is the file in the other convention? see params "
                "normalize.voc_coordinates"
                if over == 1
                else None,
            )
        return (
            f"{self.where}, field {self.field}: {tag}={value + offset:g} on {self.name!r} is "
            f"{over:g} pixel past the {edge} edge of the {w}x{h} image; clipped to "
            f"{tag}={clipped + offset:g}"
        )


def _check_size(path: Path, size: tuple[int, int], declared: tuple) -> None:
    for tag, actual, text in zip(("width", "height"), size, declared, strict=True):
        if text is not None and text.strip() and text.strip() != str(actual):
            raise DataError(
                path,
                f"the image's {tag} {actual} (upright, from its header)",
                field=f"size/{tag}",
                found=text.strip(),
            )
