"""What every importer produces, and the one function that turns it into a Dataset.

An importer reads its format into `Record`s (class *names*, boxes in pixels) and calls
`assemble`; ids, categories, counts and label order are decided here, once, so every format
converts to the same normalized dataset.

Canonical forms decided here: labels are deduplicated and sorted by category id; box
coordinates are floats rounded to 1e-6 pixel (`COORD_DECIMALS`), so a box read from YOLO's
normalized floats and the same box read from COCO integers serialize byte for byte alike.
"""

from collections import Counter
from dataclasses import dataclass
from operator import attrgetter

from data_processing.schema import Annotation, Category, Dataset, Image, make_info

MASK_ENCODING = "8-bit PNG, one pixel value per class: 0 = background, k = category id k"
COORD_DECIMALS = 6  # box coordinates are rounded to 1e-6 pixel: far below any annotation error


@dataclass(frozen=True)
class Box:
    name: str  # class name
    x: float  # COCO convention: top-left corner and size in pixels; pixel (i, j) covers
    y: float  # [i, i+1) x [j, j+1), so a 1-pixel box at column 3, row 5 is (3, 5, 1, 1)
    w: float
    h: float


@dataclass(slots=True)  # not frozen: 20,000 frozen inits cost more than the header reads
class Record:
    file_name: str  # POSIX path relative to the dataset root
    width: int
    height: int
    labels: tuple[str, ...] | None = None  # None: unlabelled (or: derive from boxes)
    boxes: tuple[Box, ...] = ()
    counts: dict[str, int] | None = None  # class name -> count, when the source gives them
    mask_file: str | None = None
    source: str | None = None  # "<file>:<row>" for error messages


def coord(value: float) -> float:
    """Return a box coordinate in canonical form: a float rounded to COORD_DECIMALS (-0 -> 0)."""
    return float(round(value, COORD_DECIMALS)) + 0.0


def label_mode(splits: dict[str, list[Record]]) -> str:
    """Return "multi" when any image in any split has other than exactly one class, else "single".

    An image's classes are its labels, or (labels None) the classes of its boxes. Unlabelled
    images (no labels, no boxes) do not count. The rule looks at the data only, so the same
    data gives the same mode in every source format.
    """
    for records in splits.values():
        for r in records:
            names = r.labels if r.labels is not None else {b.name for b in r.boxes} or None
            if names is not None and len(set(names)) != 1:
                return "multi"
    return "single"


def natural_key(name: str) -> tuple:
    """Sort "2" before "10", and numbers before words."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def category_list(splits: dict[str, list[Record]], extra: tuple[str, ...] = ()) -> list[str]:
    """Every class name seen in labels, boxes or counts, naturally sorted."""
    names = set(extra)
    for records in splits.values():
        for r in records:
            names.update(r.labels or ())
            names.update(b.name for b in r.boxes)
            names.update(r.counts or {})
    return sorted(names, key=natural_key)


def assemble(
    name: str,
    split: str,
    records: list[Record],
    categories: list[str],
    label_mode: str,
    source_format: str,
) -> Dataset:
    """Build one split: ids by sorted file name, annotation ids 1.. in that order.

    Images with boxes but no labels get the classes present as labels; images with boxes and
    no counts get object_counts from the box tally (given counts are kept as they are, and
    schema.validate reports any that disagree with the boxes). Labels come out deduplicated,
    in category id order.

    Args:
        name: dataset name for `info`.
        split: "train" or "test".
        records: what the importer read.
        categories: every class name, in category id order (see `category_list`).
        label_mode: "single" or "multi" (see `label_mode`).
        source_format: the importer's name, recorded in `info`.

    Returns:
        The split as a Dataset.
    """
    cat_id = {n: i for i, n in enumerate(categories, start=1)}
    images, annotations = [], []
    for image_id, r in enumerate(sorted(records, key=attrgetter("file_name")), start=1):
        labels = r.labels
        if labels is None and r.boxes:
            labels = tuple(b.name for b in r.boxes)
        counts = r.counts  # given counts are kept, so schema.validate can check them
        if counts is None and r.boxes:
            counts = dict(Counter(b.name for b in r.boxes))
        images.append(
            Image(
                id=image_id,
                file_name=r.file_name,
                width=r.width,
                height=r.height,
                labels=None if labels is None else tuple(sorted({cat_id[n] for n in labels})),
                object_counts=None if counts is None else dict(sorted(counts.items())),
                mask_file=r.mask_file,
                source=r.source,
            )
        )
        for b in r.boxes:
            bbox = (coord(b.x), coord(b.y), coord(b.w), coord(b.h))
            annotations.append(
                Annotation(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=cat_id[b.name],
                    bbox=bbox,
                    area=coord(bbox[2] * bbox[3]),
                )
            )
    info = make_info(name, split, label_mode, source_format)
    if any(r.mask_file for r in records):
        info["mask_encoding"] = MASK_ENCODING
    return Dataset(
        info=info,
        categories=tuple(Category(id=i, name=n) for n, i in cat_id.items()),
        images=tuple(images),
        annotations=tuple(annotations),
    )
