"""Pure checks on one normalized dataset and its raw files, for the validate stage.

Reads image and mask files under the dataset root (`datasets/raw/<name>/`); writes nothing.
Every check returns problems as strings that name the record's `source` ("<file>:<row>") and
its file, so that a user can find and fix them. `validate.py` decides what is an error.

Sized for 50,000+ images: `scan_images` decodes every image once, in worker processes when
there are many, and keeps a few numbers per image in numpy arrays (`Scan`), never pixels.
Duplicates and near duplicates are found from these rows in data_processing/duplicates.py.
"""

import hashlib
import multiprocessing
import os
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from data_processing import schema
from data_processing.core import progress
from data_processing.core.errors import DataError
from data_processing.images import decode, is_image, read_header

MASK_MODES = ("L", "P")  # 8-bit, one value per pixel: the value is the category id
MIN_PARALLEL = 200  # fewer images decode in this process: starting workers would cost more

Decoded = tuple[int, int, str, bytes, int]  # width, height, file mode, sha256, pHash


@dataclass(frozen=True)
class Scan:
    """The readable images of every split, one row each, as parallel arrays: no pixels.

    About 60 bytes an image (and a reference to its record), so 50,000 images take ~3 MB.
    Rows follow the splits' order, then each split's image order (sorted file names).
    """

    splits: tuple[str, ...]  # split names; `split` holds indices into this
    images: tuple[schema.Image, ...]  # the record of each row, for messages
    split: np.ndarray  # uint8
    width: np.ndarray  # int32, decoded (upright) size
    height: np.ndarray  # int32
    modes: tuple[str, ...]  # Pillow modes of the files, before conversion
    mode: np.ndarray  # uint8 indices into `modes`
    sha256: np.ndarray  # S32: sha256 of the decoded RGB pixels and their shape
    phash: np.ndarray  # uint64: 64-bit perceptual hash of the grayscale image

    def rows(self, split: str) -> np.ndarray:
        """Row indices of one split's images."""
        return np.flatnonzero(self.split == self.splits.index(split))


def where(image: schema.Image) -> str:
    """Name an image for a message: its source row and its file."""
    return f"{image.source} ({image.file_name})" if image.source else image.file_name


def check_schema(split: str, dataset: schema.Dataset) -> list[str]:
    """Return `schema.validate` problems (ids, dangling refs, boxes, counts), split-prefixed."""
    return [f"{split}: {problem}" for problem in schema.validate(dataset)]


def decode_one(path: str) -> Decoded | str:
    """Fully decode one image: (width, height, file mode, sha256, pHash), or the error text.

    Runs in a worker process; it returns a few small values, never pixels, so that nothing
    large crosses between processes and the parent's memory does not grow with image sizes.
    """
    try:
        arr = decode(Path(path), channels=3)
        mode = read_header(Path(path))[2]
    except DataError as err:
        return str(err)
    height, width = arr.shape[:2]
    digest = hashlib.sha256(f"{arr.shape}".encode())
    digest.update(np.ascontiguousarray(arr))  # the bytes as arr.tobytes(), without a copy
    phash = imagehash.phash(PILImage.fromarray(arr).convert("L"))
    bits = int.from_bytes(np.packbits(phash.hash.ravel()).tobytes(), "big")
    return width, height, mode, digest.digest(), bits


def decode_all(paths: Sequence[str], processes: int | None = None) -> Iterator[Decoded | str]:
    """`decode_one` every path, in input order (so the report is deterministic), with a bar.

    processes: worker processes; None: every core this process may use, or none (decode
    here) for fewer than MIN_PARALLEL images. Workers are spawned, not forked: a fork would
    copy the parent's records into every worker as the garbage collector touches them. So,
    as ever with spawn, a script calling this needs an `if __name__ == "__main__":` guard.
    """
    if processes is None:
        many = len(paths) >= MIN_PARALLEL
        processes = len(os.sched_getaffinity(0)) if many else 1
    bar = progress.bar(len(paths), "validate")
    with bar:
        if processes < 2:
            for path in paths:
                yield decode_one(path)
                bar.update()
            return
        chunk = max(1, min(64, len(paths) // (8 * processes)))  # ~8 chunks a worker: balanced
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for result in pool.imap(decode_one, paths, chunksize=chunk):
                yield result
                bar.update()


class _Paths(Sequence[str]):
    """The file path of each record, made when asked: a list would hold 50,000 strings."""

    def __init__(self, raw_dir: Path, images: tuple[schema.Image, ...]) -> None:
        self.raw_dir, self.images = Path(raw_dir), images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> str:  # an int: no slices here
        return str(self.raw_dir / self.images[row].file_name)


class _Columns:
    """Arrays that scan_images fills row by row as results arrive; then a Scan of the rows."""

    def __init__(self, n: int) -> None:
        self.size, self.mode = np.zeros((n, 2), np.int32), np.zeros(n, np.uint8)
        self.sha256, self.phash = np.zeros(n, "S32"), np.zeros(n, np.uint64)
        self.ok, self.modes = np.zeros(n, bool), {}  # modes: Pillow mode -> its index

    def add(self, row: int, decoded: Decoded) -> None:
        width, height, mode, self.sha256[row], self.phash[row] = decoded
        self.size[row], self.ok[row] = (width, height), True
        self.mode[row] = self.modes.setdefault(mode, len(self.modes))

    def scan(self, splits: tuple[str, ...], images: tuple, split: np.ndarray) -> Scan:
        everything = bool(self.ok.all())  # the usual case: views, not copies of every array
        keep = slice(None) if everything else np.flatnonzero(self.ok)
        width, height = self.size[keep].T
        return Scan(
            splits=splits,
            images=images if everything else tuple(images[i] for i in keep),
            split=split[keep],
            width=width,
            height=height,
            modes=tuple(self.modes),
            mode=self.mode[keep],
            sha256=self.sha256[keep],
            phash=self.phash[keep],
        )


def scan_images(
    raw_dir: Path, splits: dict[str, schema.Dataset], processes: int | None = None
) -> tuple[dict[str, list[str]], Scan]:
    """Decode every image of every split once; return ({split: errors}, Scan of the readable).

    Errors: unreadable or truncated files (naming the record's row) and decoded sizes that
    differ from the annotated ones. One pass over all splits, so the workers start once.
    """
    names = tuple(splits)
    images = tuple(image for dataset in splits.values() for image in dataset.images)
    counts = [len(dataset.images) for dataset in splits.values()]
    split = np.repeat(np.arange(len(names), dtype=np.uint8), counts)
    paths = _Paths(raw_dir, images)
    errors: dict[str, list[str]] = {name: [] for name in names}
    columns = _Columns(len(images))
    for row, result in enumerate(decode_all(paths, processes)):
        image, problems = images[row], errors[names[split[row]]]
        if isinstance(result, str):
            problems.append(f"{result} (listed at {image.source})")
            continue
        columns.add(row, result)
        width, height = result[:2]
        if (height, width) != (image.height, image.width):
            problems.append(
                f"{paths[row]}: expected {image.width}x{image.height} as annotated at "
                f"{image.source}; found {width}x{height}"
            )
    return errors, columns.scan(names, images, split)


def check_unlisted(raw_dir: Path, dataset: schema.Dataset) -> list[str]:
    """Images in an annotated folder that no record lists (masks are not images to list)."""
    listed = {i.file_name for i in dataset.images} | {
        i.mask_file for i in dataset.images if i.mask_file
    }
    errors = []
    for folder in sorted({Path(i.file_name).parent for i in dataset.images}):
        if not (Path(raw_dir) / folder).is_dir():
            continue  # scan_images reports the missing files
        with os.scandir(Path(raw_dir) / folder) as entries:
            names = sorted(e.name for e in entries if e.is_file() and is_image(e.name))
        for name in names:
            if (folder / name).as_posix() not in listed:
                errors.append(
                    f"{Path(raw_dir) / folder / name}: expected an annotation for this image; "
                    "found none"
                )
    return errors


def check_masks(raw_dir: Path, dataset: schema.Dataset) -> list[str]:
    """Masks must exist, be 8-bit single-channel, match the image size, hold 0 or category ids."""
    known = {0} | {c.id for c in dataset.categories}
    errors = []
    for image in dataset.images:
        if image.mask_file is None:
            continue
        path = Path(raw_dir) / image.mask_file
        try:
            with PILImage.open(path) as im:
                im.load()
                mode, size, values = im.mode, im.size, np.unique(np.asarray(im))
        except FileNotFoundError:
            errors.append(f"{path}: expected the mask of {where(image)}; found no such file")
            continue
        except (UnidentifiedImageError, OSError, ValueError) as err:
            errors.append(f"{path}: expected a readable mask PNG for {where(image)}; found {err}")
            continue
        if mode not in MASK_MODES:
            errors.append(f"{path}: expected an 8-bit mask (mode L or P); found mode {mode}")
        elif size != (image.width, image.height):
            errors.append(
                f"{path}: expected the size of {where(image)}, {image.width}x{image.height}; "
                f"found {size[0]}x{size[1]}"
            )
        elif unknown := sorted(int(v) for v in values if int(v) not in known):
            errors.append(
                f"{path}: expected pixel values 0 (background) or a category id "
                f"{sorted(known - {0})} for {where(image)}; found {unknown}"
            )
    return errors


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def image_stats(scan: Scan, split: str, top: int = 10) -> dict:
    """One split's width/height spread, most common sizes (`top` of them) and Pillow modes."""
    rows = scan.rows(split)
    widths, heights = scan.width[rows].tolist(), scan.height[rows].tolist()
    sizes = Counter(f"{w}x{h}" for w, h in zip(widths, heights, strict=True))
    modes = Counter(scan.modes[m] for m in scan.mode[rows].tolist())
    return {
        "width": _spread(widths),
        "height": _spread(heights),
        "distinct_sizes": len(sizes),
        "sizes": dict(sizes.most_common(top)),
        "modes": dict(modes.most_common()),
    }


def check_labels(
    train: schema.Dataset, test: schema.Dataset, max_imbalance: float, min_per_class: int
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings): test labels unknown to train; imbalance; small classes."""
    errors, warnings = [], []
    train_counts, test_counts = schema.class_counts(train), schema.class_counts(test)
    names = {c.id: c.name for c in test.categories}
    expected = sorted(n for n, k in train_counts.items() if k)
    for image in test.images:
        labels = [names[c] for c in image.labels or () if c in names]
        unknown = [n for n in labels if train_counts[n] == 0]
        if unknown:
            errors.append(
                f"{where(image)}: label {unknown[0]!r} is in test but not in train; "
                f"expected one of {expected}"
            )
    present = {n: k for n, k in train_counts.items() if k > 0}
    if present and max(present.values()) > max_imbalance * min(present.values()):
        big, small = max(present, key=present.get), min(present, key=present.get)
        warnings.append(
            f"class imbalance in train: {big!r} has {present[big]} images, {small!r} has "
            f"{present[small]} (ratio {present[big] / present[small]:.1f} > {max_imbalance})"
        )
    for name, count in train_counts.items():
        if 0 < count < min_per_class:
            warnings.append(f"class {name!r} has only {count} training images (< {min_per_class})")
    for name, count in test_counts.items():
        if count == 0 and train_counts[name] > 0:
            warnings.append(f"class {name!r} has no test images")
    return errors, warnings
