"""Decode one normalized dataset once into uint8 arrays, so training never re-reads images.

Reads datasets/normalized/<name>/<split>.json and the raw images; writes
<out_dir>/<split>.npz with:
    images      uint8 [N, H, W, C]  C = 1 when every image is grayscale, else 3
    labels      uint8 [N, K]        multi-hot over the categories (single-label: one 1)
    file_names  str   [N]
    categories  str   [K]           index i <-> category id i + 1
    label_mode  str   []            "single" or "multi"
Images of differing sizes are resized (bilinear) to the most common size; the model resizes
again inside its graph, so serving still takes any size.

Run: python -m data_processing.decode datasets/raw/digits datasets/normalized/digits \
         datasets/decoded/digits
"""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing import schema
from data_processing.errors import exit_on_error
from data_processing.images import channels_for, decode, read_header
from data_processing.io import staged_dir


def decode_split(
    raw_dir: Path, dataset: schema.Dataset, channels: int, size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Return the arrays for one split (see the module docstring)."""
    n, k = len(dataset.images), len(dataset.categories)
    images = np.zeros((n, size[1], size[0], channels), np.uint8)
    labels = np.zeros((n, k), np.uint8)
    for row, image in enumerate(dataset.images):
        arr = decode(raw_dir / image.file_name, channels)
        if arr.shape[1::-1] != size:
            resized = PILImage.fromarray(arr.squeeze(-1) if channels == 1 else arr)
            arr = np.asarray(resized.resize(size, PILImage.BILINEAR)).reshape(images.shape[1:])
        images[row] = arr
        labels[row, [c - 1 for c in image.labels or ()]] = 1
    return {
        "images": images,
        "labels": labels,
        "file_names": np.array([i.file_name for i in dataset.images]),
        "categories": np.array(dataset.category_names()),
        "label_mode": np.array(dataset.label_mode),
    }


def common_format(raw_dir: Path, splits: dict[str, schema.Dataset]) -> tuple[int, tuple[int, int]]:
    """Return (channels, (width, height)) shared by every split."""
    images = [i for d in splits.values() for i in d.images]
    modes = {read_header(raw_dir / i.file_name)[2] for i in images}
    size = Counter((i.width, i.height) for i in images).most_common(1)[0][0]
    return channels_for(modes), size


@exit_on_error
def main() -> None:
    raw_dir, norm_dir, out_dir = (Path(a) for a in sys.argv[1:4])
    splits = {p.stem: schema.load(p) for p in sorted(norm_dir.glob("*.json"))}
    channels, size = common_format(raw_dir, splits)
    with staged_dir(out_dir) as tmp:
        for split, dataset in splits.items():
            np.savez(tmp / f"{split}.npz", **decode_split(raw_dir, dataset, channels, size))
    print(f"decode: {raw_dir.name}: {size[0]}x{size[1]}x{channels} -> {out_dir}")


if __name__ == "__main__":
    main()
