"""Pure checks on one normalized dataset and its raw files, for the validate stage.

Reads image and mask files under the dataset root (`datasets/raw/<name>/`); writes nothing.
Every check returns problems as strings that name the record's `source` ("<file>:<row>") and
its file, so that a user can find and fix them. `validate.py` decides what is an error.

Duplicates are found on the decoded pixels, not the file bytes: sha256 of the RGB array and its
shape catches copies re-encoded with other PNG settings or metadata, and costs nothing extra
because every image is decoded anyway (the truncation check). Near duplicates use a 64-bit
perceptual hash (`imagehash.phash`) compared by Hamming distance.
"""

import hashlib
import itertools
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from data_processing import schema
from data_processing.errors import DataError
from data_processing.images import decode, is_image, read_header

MASK_MODES = ("L", "P")  # 8-bit, one value per pixel: the value is the category id
HASH_BITS = 64  # imagehash.phash with hash_size=8
MAX_PAIRS = 1000  # duplicate pairs of each kind kept in validate.json (all are counted)


@dataclass(frozen=True)
class Scanned:
    """What one decode of an image leaves behind: no pixels, so memory stays flat."""

    split: str
    file_name: str
    where: str  # "<source> (<file_name>)", for messages
    width: int
    height: int
    mode: str  # Pillow mode of the file, before conversion
    sha256: str  # of the decoded RGB pixels and their shape
    phash: int  # 64-bit perceptual hash of the grayscale image


def where(image: schema.Image) -> str:
    """Name an image for a message: its source row and its file."""
    return f"{image.source} ({image.file_name})" if image.source else image.file_name


def check_schema(split: str, dataset: schema.Dataset) -> list[str]:
    """Return `schema.validate` problems (ids, dangling refs, boxes, counts), split-prefixed."""
    return [f"{split}: {problem}" for problem in schema.validate(dataset)]


def scan_images(raw_dir: Path, split: str, dataset: schema.Dataset) -> tuple[list[str], list]:
    """Decode every image once; return (errors, [Scanned]) for the readable ones."""
    errors, scanned = [], []
    for image in dataset.images:
        path = Path(raw_dir) / image.file_name
        try:
            arr = decode(path, channels=3)
            mode = read_header(path)[2]
        except DataError as err:
            errors.append(f"{err} (listed at {image.source})")
            continue
        height, width = arr.shape[:2]
        if (height, width) != (image.height, image.width):
            errors.append(
                f"{path}: expected {image.width}x{image.height} as annotated at "
                f"{image.source}; found {width}x{height}"
            )
        digest = hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()
        phash = imagehash.phash(PILImage.fromarray(arr).convert("L"))
        bits = int.from_bytes(np.packbits(phash.hash.ravel()).tobytes(), "big")
        scanned.append(
            Scanned(split, image.file_name, where(image), width, height, mode, digest, bits)
        )
    return errors, scanned


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


def _listed(problems: list[str], max_listed: int) -> list[str]:
    """The first `max_listed` problems, and one line counting the rest."""
    if len(problems) <= max_listed:
        return problems
    return problems[:max_listed] + [f"... and {len(problems) - max_listed} more of this kind"]


def find_exact_duplicates(scanned: list[Scanned]) -> list[list[Scanned]]:
    """Groups of two or more images with identical decoded pixels, in file order."""
    groups: dict[str, list[Scanned]] = {}
    for s in scanned:
        groups.setdefault(s.sha256, []).append(s)
    return [g for g in groups.values() if len(g) > 1]


def find_near_duplicates(
    a: list[Scanned], b: list[Scanned], max_distance: int
) -> list[tuple[Scanned, Scanned, int]]:
    """Pairs (a, b, distance) whose pHash Hamming distance is <= max_distance, pixels differing.

    Vectorised XOR + popcount in chunks: 1,347 x 450 digits pairs take a few milliseconds.
    """
    if max_distance < 0 or not a or not b:
        return []
    ha = np.array([s.phash for s in a], dtype=np.uint64)
    hb = np.array([s.phash for s in b], dtype=np.uint64)
    pairs, rows = [], max(1, 2**22 // len(hb))  # at most 4M distances (32 MB) at a time
    for start in range(0, len(ha), rows):
        dist = np.bitwise_count(ha[start : start + rows, None] ^ hb[None, :])
        for i, j in zip(*np.nonzero(dist <= max_distance), strict=True):
            x, y = a[start + i], b[j]
            if x.sha256 != y.sha256:  # identical pixels are reported as exact duplicates
                pairs.append((x, y, int(dist[i, j])))
    return sorted(pairs, key=lambda p: (p[2], p[0].file_name, p[1].file_name))


def check_leakage(
    scanned: dict[str, list[Scanned]], max_distance: int, max_listed: int
) -> tuple[list[str], list[str], dict]:
    """Return (errors, warnings, leakage) for duplicates across and within splits.

    Identical pixels in two splits are errors: the test score would measure memory, and users
    expect that to stop the pipeline. Near duplicates need a human look: warnings. Identical
    images within one split only skew the class weights: warnings.
    """
    everyone = [s for split in scanned.values() for s in split]
    cross, within = [], []
    for group in find_exact_duplicates(everyone):
        for x, y in itertools.combinations(group, 2):
            (cross if x.split != y.split else within).append((x, y))
    near = [
        pair
        for sa, sb in itertools.combinations(scanned, 2)
        for pair in find_near_duplicates(scanned[sa], scanned[sb], max_distance)
    ]
    errors = [
        f"{x.where} and {y.where}: identical pixels in {x.split} and {y.split} "
        "(exact duplicate: train/test leakage); remove one of them"
        for x, y in cross
    ]
    warnings = [
        f"{x.where} and {y.where}: near duplicates across {x.split} and {y.split} "
        f"(pHash Hamming distance {d} <= {max_distance} of {HASH_BITS} bits)"
        for x, y, d in near
    ]
    warnings += [f"{x.where} and {y.where}: identical pixels within {x.split}" for x, y in within]
    leakage = {
        "exact_hash": "sha256 of the decoded RGB pixels and their shape",
        "near_hash": f"imagehash.phash, {HASH_BITS} bits, Hamming distance <= {max_distance}",
        "counts": {"exact": len(cross), "near": len(near), "within_split": len(within)},
        "exact": [[x.file_name, y.file_name] for x, y in cross[:MAX_PAIRS]],
        "near": [[x.file_name, y.file_name, d] for x, y, d in near[:MAX_PAIRS]],
        "within_split": [[x.file_name, y.file_name] for x, y in within[:MAX_PAIRS]],
    }
    return _listed(errors, max_listed), _listed(warnings, max_listed), leakage


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def image_stats(scanned: list[Scanned], top: int = 10) -> dict:
    """Width/height spread, the most common sizes (`top` of them) and Pillow modes."""
    sizes = Counter(f"{s.width}x{s.height}" for s in scanned)
    return {
        "width": _spread([s.width for s in scanned]),
        "height": _spread([s.height for s in scanned]),
        "distinct_sizes": len(sizes),
        "sizes": dict(sizes.most_common(top)),
        "modes": dict(Counter(s.mode for s in scanned).most_common()),
    }


def class_counts(dataset: schema.Dataset) -> Counter:
    """Category name -> images labelled with it; unknown ids are skipped (check_schema flags)."""
    names = {c.id: c.name for c in dataset.categories}
    counts = Counter({name: 0 for name in names.values()})
    counts.update(names[c] for i in dataset.images for c in i.labels or () if c in names)
    return counts


def check_labels(
    train: schema.Dataset, test: schema.Dataset, max_imbalance: float, min_per_class: int
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings): test labels unknown to train; imbalance; small classes."""
    errors, warnings = [], []
    train_counts, test_counts = class_counts(train), class_counts(test)
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
