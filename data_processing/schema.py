"""The project's fixed annotation format: a strict superset of COCO, one JSON file per split.

`pycocotools.coco.COCO` reads these files unchanged. Extensions on each image (`labels`,
`object_counts`, `mask_file`, `source`) are ignored by COCO readers. See datasets/FORMAT.md.
Output is deterministic (ids by sorted file name, no timestamps) so DVC's cache holds.
"""

import functools
import json
import math
import os
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_processing.core.errors import DataError

FORMAT_VERSION = "1.0"


@dataclass(frozen=True, slots=True)  # slots: a third of the memory per record
class Category:
    id: int  # 1-based, as in COCO
    name: str
    supercategory: str = ""


@dataclass(frozen=True, slots=True)  # slots: a third of the memory per record
class Image:
    id: int  # 1-based, in sorted file_name order
    file_name: str  # POSIX path relative to the dataset root (datasets/raw/<name>/)
    width: int  # upright size (after EXIF orientation)
    height: int
    labels: tuple[int, ...] | None = None  # category ids; None = unlabelled, () = no class
    object_counts: dict[str, int] | None = None  # class name -> count
    mask_file: str | None = None  # mask PNG relative to the dataset root; pixel = category id
    source: str | None = None  # "<file>:<row>" the record came from, for error messages


@dataclass(frozen=True, slots=True)  # slots: a third of the memory per record
class Annotation:
    id: int  # 1-based, unique within the file
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # COCO [x, y, w, h] in pixels, top-left origin
    area: float
    iscrowd: int = 0


class ImageTable(Sequence):
    """A split's images as columns, ids 1..N in order; each Image is made when read, so
    normalize's memory grows slowly with the dataset (bench/scale.py). Compares equal to any
    sequence of the same Images."""

    __slots__ = ("_names", "_sizes", "_labels", "_counts", "_masks", "_sources", "_lines")

    def __init__(
        self,
        file_names: list[str],
        sizes: array,  # "I": width, height, width, height, ...
        labels: list[tuple[int, ...] | None],  # shared tuples: one per distinct label set
        counts: dict[int, dict[str, int]],  # position -> object_counts (sparse)
        masks: dict[int, str],  # position -> mask_file (sparse)
        sources: list[str | None],  # the source, or its "<file>" part when lines[i] >= 0
        lines: array,  # "q": the "<row>" of "<file>:<row>", or -1
    ) -> None:
        self._names, self._sizes, self._labels = file_names, sizes, labels
        self._counts, self._masks, self._sources, self._lines = counts, masks, sources, lines

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        source, line = self._sources[i], self._lines[i]
        return Image(
            id=i + 1,
            file_name=self._names[i],
            width=self._sizes[2 * i],
            height=self._sizes[2 * i + 1],
            labels=self._labels[i],
            object_counts=self._counts.get(i),
            mask_file=self._masks.get(i),
            source=source if line < 0 else f"{source}:{line}",
        )

    def __iter__(self) -> Iterator[Image]:
        return map(self.__getitem__, range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # mutable columns

    def __repr__(self) -> str:
        return f"ImageTable({len(self)} images)"


@dataclass(frozen=True)
class Dataset:
    """One split of one dataset."""

    categories: tuple[Category, ...]
    images: Sequence[Image]  # a tuple, or an ImageTable
    annotations: tuple[Annotation, ...] = ()
    info: dict = field(default_factory=dict)  # includes label_mode: "single" | "multi"
    licenses: tuple[dict, ...] = ()

    @property
    def label_mode(self) -> str:
        return self.info.get("label_mode", "single")

    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]


def make_info(name: str, split: str, label_mode: str, source_format: str) -> dict:
    """Return the `info` block written into every file."""
    return {
        "description": f"{name} ({split})",
        "version": FORMAT_VERSION,
        "dataset": name,
        "split": split,
        "label_mode": label_mode,
        "source_format": source_format,
    }


def _image_json(image: Image) -> dict:
    """One image record; None extensions are left out (asdict would deep-copy them)."""
    record = {
        "id": image.id,
        "file_name": image.file_name,
        "width": image.width,
        "height": image.height,
    }
    for key in ("labels", "object_counts", "mask_file", "source"):
        value = getattr(image, key)
        if value is not None:
            record[key] = list(value) if key == "labels" else value
    return record


def to_json(dataset: Dataset) -> dict:
    """Return the dataset as a COCO-compatible dict; optional extensions are omitted when None."""
    images = [_image_json(image) for image in dataset.images]
    return {
        "info": dataset.info,
        "licenses": list(dataset.licenses),
        "categories": [asdict(c) for c in dataset.categories],
        "images": images,
        "annotations": [{**asdict(a), "bbox": list(a.bbox)} for a in dataset.annotations],
    }


def save(dataset: Dataset, path: Path) -> None:
    """Write compact JSON atomically (a temporary file renamed into place), one record at a
    time: the same bytes as json.dumps(to_json(dataset)), without holding them all."""
    dump = functools.partial(
        json.dumps,
        allow_nan=False,
        ensure_ascii=False,
        separators=(",", ":"),
        check_circular=False,  # plain dicts and lists: no cycles to look for
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", buffering=1 << 20) as f:
        f.write(f'{{"info":{dump(dataset.info)},"licenses":{dump(list(dataset.licenses))},')
        f.write(f'"categories":{dump([asdict(c) for c in dataset.categories])},"images":[')
        for n, image in enumerate(dataset.images):
            f.write(("," if n else "") + dump(_image_json(image)))
        f.write('],"annotations":[')
        for n, a in enumerate(dataset.annotations):
            f.write(("," if n else "") + dump({**asdict(a), "bbox": list(a.bbox)}))
        f.write("]}\n")
    os.replace(tmp, path)


def load(path: Path) -> Dataset:
    """Read one split file written by `save` (DataError naming the file and field otherwise)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Dataset(
            info=data["info"],
            licenses=tuple(data.get("licenses", ())),
            categories=tuple(Category(**c) for c in data["categories"]),
            images=tuple(
                Image(**{**i, "labels": tuple(i["labels"]) if "labels" in i else None})
                for i in data["images"]
            ),
            annotations=tuple(
                Annotation(**{**a, "bbox": tuple(a["bbox"])}) for a in data["annotations"]
            ),
        )
    except FileNotFoundError:
        raise DataError(path, "a normalized split file (run the normalize stage)") from None
    except json.JSONDecodeError as err:
        raise DataError(path, "valid JSON", row=err.lineno, found=err.msg) from None
    except (KeyError, TypeError) as err:
        raise DataError(path, "the fields of datasets/FORMAT.md", found=str(err)) from None


def validate(dataset: Dataset) -> list[str]:
    """Return schema problems: duplicate ids and dangling image or category references."""
    problems = []
    cat_ids = [c.id for c in dataset.categories]
    if len(cat_ids) != len(set(cat_ids)):
        problems.append("duplicate category ids")
    img_ids = _image_ids(dataset.images)
    if img_ids is None:
        problems.append("duplicate image ids")
        img_ids = {i.id for i in dataset.images}
    ann_ids = [a.id for a in dataset.annotations]
    if len(ann_ids) != len(set(ann_ids)):
        problems.append("duplicate annotation ids")
    if sorted(cat_ids) != list(range(1, len(cat_ids) + 1)):
        problems.append("category ids must run 1..N")
    known_cats = set(cat_ids)
    single = dataset.label_mode == "single"
    for image in dataset.images:
        bad = [c for c in image.labels or () if c not in known_cats]
        if bad:
            problems.append(f"image {image.file_name}: unknown category ids {bad}")
        if single and image.labels is not None and len(image.labels) != 1:
            problems.append(
                f"image {image.file_name}: single-label image with {len(image.labels)} labels"
            )
    if not dataset.annotations:
        return problems
    if isinstance(img_ids, range):  # ids 1..N in order: position = id - 1
        image_of = lambda i: dataset.images[i - 1] if i in img_ids else None  # noqa: E731
    else:
        image_of = {i.id: i for i in dataset.images}.get
    for ann in dataset.annotations:
        if ann.image_id not in img_ids:
            problems.append(f"annotation {ann.id}: dangling image_id {ann.image_id}")
        if ann.category_id not in known_cats:
            problems.append(f"annotation {ann.id}: dangling category_id {ann.category_id}")
        problems += _box_problems(ann, image_of(ann.image_id))
    return problems + _count_problems(dataset, image_of)


def _image_ids(images: Sequence[Image]) -> range | set[int] | None:
    """The image ids: range(1, N + 1) when they run 1..N in order (the normalized form: no set
    to hold), else a set; None when one repeats."""
    if isinstance(images, ImageTable) or all(image.id == n for n, image in enumerate(images, 1)):
        return range(1, len(images) + 1)
    ids = [i.id for i in images]
    unique = set(ids)
    return unique if len(unique) == len(ids) else None


def _box_problems(ann: Annotation, image: Image | None) -> list[str]:
    """A box must be finite, of positive area and inside its image."""
    x, y, w, h = ann.bbox
    where = f"annotation {ann.id}" + (f" ({image.source or image.file_name})" if image else "")
    if not all(math.isfinite(v) for v in ann.bbox):
        return [f"{where}: bbox {list(ann.bbox)} is not finite"]
    if w <= 0 or h <= 0:
        return [f"{where}: bbox {list(ann.bbox)} has zero area; expected w > 0 and h > 0"]
    if image and (x < 0 or y < 0 or x + w > image.width or y + h > image.height):
        return [f"{where}: bbox {list(ann.bbox)} leaves the {image.width}x{image.height} image"]
    return []


def _count_problems(dataset: Dataset, image_of) -> list[str]:
    """object_counts must equal the box tally wherever an image has boxes."""
    names = {c.id: c.name for c in dataset.categories}
    tally: dict[int, Counter] = {}
    for ann in dataset.annotations:
        tally.setdefault(ann.image_id, Counter())[names.get(ann.category_id)] += 1
    problems = []
    for image_id, boxes in sorted(tally.items()):
        image = image_of(image_id)
        if image is not None and image.object_counts is not None:
            if dict(boxes) != image.object_counts:
                problems.append(
                    f"image {image.source or image.file_name}: object_counts "
                    f"{image.object_counts} disagree with its boxes {dict(boxes)}"
                )
    return problems


def class_counts(dataset: Dataset) -> Counter:
    """Category name -> images labelled with it (every category present; ids that name no
    category are skipped: `validate` reports them)."""
    names = {c.id: c.name for c in dataset.categories}
    counts = Counter({name: 0 for name in names.values()})
    counts.update(names[c] for image in dataset.images for c in image.labels or () if c in names)
    return counts
