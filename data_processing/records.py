"""What every importer produces, and the one function that turns it into a Dataset.

An importer reads its format into `Record`s (class *names*, boxes in pixels) and calls
`assemble`; ids, categories, counts and label order are decided here, once, so every format
converts to the same normalized dataset.

Canonical forms decided here: labels are deduplicated and sorted by category id; box
coordinates are floats rounded to 1e-6 pixel (`COORD_DECIMALS`), so a box read from YOLO's
normalized floats and the same box read from COCO integers serialize byte for byte alike.
"""

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from data_processing.schema import Annotation, Category, Dataset, ImageTable, make_info

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


class RecordTable:
    """One split's records as columns: what an importer yields, held in about a tenth of the
    memory of Record objects (the file name is the one string kept per image; label sets and
    source files are shared). Boxes, counts and masks are kept only for the records that
    have them."""

    def __init__(self) -> None:
        self.file_names: list[str] = []
        self.sizes = array("I")  # width, height, ...
        self.labels: list[tuple[str, ...] | None] = []  # shared tuples (self._shared)
        self.boxes: dict[int, tuple[Box, ...]] = {}
        self.counts: dict[int, dict[str, int]] = {}
        self.masks: dict[int, str] = {}
        self.sources: list[str | None] = []  # the "<file>" of "<file>:<row>", or the source
        self.lines = array("q")  # the "<row>", or -1
        self._shared: dict = {}

    @classmethod
    def of(cls, records: "Iterable[Record] | RecordTable") -> "RecordTable":
        """`records` collected into a table (a table is returned as it is)."""
        if isinstance(records, RecordTable):
            return records
        from data_processing.core import progress

        table = cls()  # a counter, not a bar: importers stream, so the total is unknown
        with progress.bar(None, "read") as bar:
            for record in records:
                table.append(record)
                bar.update()
        return table

    def __len__(self) -> int:
        return len(self.file_names)

    def append(self, r: Record) -> None:
        n = len(self.file_names)
        self.file_names.append(r.file_name)
        self.sizes.extend((r.width, r.height))
        labels = r.labels if r.labels is None else self._shared.setdefault(r.labels, r.labels)
        self.labels.append(labels)
        if r.boxes:
            self.boxes[n] = r.boxes
        if r.counts is not None:
            self.counts[n] = r.counts
        if r.mask_file is not None:
            self.masks[n] = r.mask_file
        source, line = r.source, -1
        if source is not None:
            head, sep, tail = source.rpartition(":")
            canonical = sep and tail.isascii() and tail.isdigit() and tail == str(int(tail))
            if canonical:  # "<file>:<row>"
                source, line = self._shared.setdefault(head, head), int(tail)
        self.sources.append(source)
        self.lines.append(line)

    def class_sets(self) -> Iterable[tuple[str, ...] | set[str] | None]:
        """Each distinct class set of the labelled records: labels, or (labels None) the
        classes of its boxes, None for an unlabelled record."""
        yield from {t: None for t in self.labels if t is not None}
        for n, t in enumerate(self.labels):
            if t is None:
                yield {b.name for b in self.boxes.get(n, ())} or None

    def class_names(self) -> set[str]:
        """Every class name in labels, boxes and counts."""
        names = {n for t in {t: None for t in self.labels if t} for n in t}
        names.update(b.name for boxes in self.boxes.values() for b in boxes)
        names.update(name for counts in self.counts.values() for name in counts)
        return names


Split = Iterable[Record] | RecordTable


def label_mode(splits: dict[str, Split]) -> str:
    """Return "multi" when any image in any split has other than exactly one class, else "single".

    An image's classes are its labels, or (labels None) the classes of its boxes. Unlabelled
    images (no labels, no boxes) do not count. The rule looks at the data only, so the same
    data gives the same mode in every source format.
    """
    for records in splits.values():
        for names in RecordTable.of(records).class_sets():
            if names is not None and len(set(names)) != 1:
                return "multi"
    return "single"


def natural_key(name: str) -> tuple:
    """Sort "2" before "10", and numbers before words."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def category_list(splits: dict[str, Split], extra: tuple[str, ...] = ()) -> list[str]:
    """Every class name seen in labels, boxes or counts, naturally sorted."""
    names = set(extra)
    for records in splits.values():
        names |= RecordTable.of(records).class_names()
    return sorted(names, key=natural_key)


def assemble(
    name: str,
    split: str,
    records: Split,
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
        records: what the importer read (Records, or a RecordTable of them).
        categories: every class name, in category id order (see `category_list`).
        label_mode: "single" or "multi" (see `label_mode`).
        source_format: the importer's name, recorded in `info`.

    Returns:
        The split as a Dataset, its images an ImageTable.
    """
    table = RecordTable.of(records)
    cat_id = {n: i for i, n in enumerate(categories, start=1)}
    order = sorted(range(len(table)), key=table.file_names.__getitem__)
    labels, counts, masks, annotations = _per_image(table, order, cat_id)
    sizes = array("I", (v for old in order for v in table.sizes[2 * old : 2 * old + 2]))
    images = ImageTable(
        file_names=[table.file_names[old] for old in order],
        sizes=sizes,
        labels=labels,
        counts=counts,
        masks=masks,
        sources=[table.sources[old] for old in order],
        lines=array("q", (table.lines[old] for old in order)),
    )
    info = make_info(name, split, label_mode, source_format)
    if masks:
        info["mask_encoding"] = MASK_ENCODING
    return Dataset(
        info=info,
        categories=tuple(Category(id=i, name=n) for n, i in cat_id.items()),
        images=images,
        annotations=tuple(annotations),
    )


def _per_image(table: "RecordTable", order: list[int], cat_id: dict[str, int]):
    """(labels, counts, masks, annotations) of the images in `order`: labels from boxes
    where there are none, counts from the box tally where none were given (given ones are
    kept, so schema.validate can check them), one annotation per box."""
    ids: dict[tuple[str, ...], tuple[int, ...]] = {}  # one id tuple per distinct label set
    labels, counts, masks, annotations = [], {}, {}, []
    for new, old in enumerate(order):
        names, boxes = table.labels[old], table.boxes.get(old, ())
        if names is None and boxes:
            names = tuple(b.name for b in boxes)
        if names is not None and names not in ids:
            ids[names] = tuple(sorted({cat_id[n] for n in names}))
        labels.append(None if names is None else ids[names])
        given = table.counts.get(old)
        if given is None and boxes:
            given = dict(Counter(b.name for b in boxes))
        if given is not None:
            counts[new] = dict(sorted(given.items()))
        if old in table.masks:
            masks[new] = table.masks[old]
        for b in boxes:
            bbox = (coord(b.x), coord(b.y), coord(b.w), coord(b.h))
            area = coord(bbox[2] * bbox[3])
            annotations.append(
                Annotation(len(annotations) + 1, new + 1, cat_id[b.name], bbox, area)
            )
    return labels, counts, masks, annotations
