"""Write the UCI optical handwritten digits (shipped inside scikit-learn) in the seed format.

Reads nothing from the network: `sklearn.datasets.load_digits` reads a file inside the package.
Writes datasets/raw/digits/{train,test}/*.png and a groundtruth.csv per split, from a
stratified, seeded split. 1,797 images of 8x8 pixels, 10 classes (see datasets/digits.md).

Run: python -m data_processing.digits datasets/raw/digits
"""

import csv
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.core import cli
from data_processing.core.io import staged_dir
from data_processing.core.params import BaseParams, Params, load_params


class DigitsParams(Params):
    test_fraction: float = 0.25  # share of each class held out for the test split


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Return stratified, seeded train/test index arrays (sorted)."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    return {"train": np.sort(train), "test": np.sort(test)}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Scale the dataset's 0..16 gray levels to 0..255."""
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)


def write_seed_format(
    images: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray], out_dir: Path
) -> None:
    """Write PNGs and groundtruth.csv per split into a temporary folder, then move it in place."""
    with staged_dir(out_dir) as tmp:
        for split, idx in splits.items():
            (tmp / split).mkdir()
            with (tmp / split / "groundtruth.csv").open("w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["filename", "label"])
                for i in idx:
                    name = f"digit_{i:04d}.png"
                    PILImage.fromarray(images[i], "L").save(tmp / split / name)
                    writer.writerow([name, str(labels[i])])


def main() -> None:
    (out_dir,) = cli.paths(__doc__, ("out_dir", "where the seed-format dataset is written"))
    params = load_params("digits", DigitsParams)
    seed = load_params("base", BaseParams).seed
    from sklearn.datasets import load_digits

    data = load_digits()
    splits = split_indices(data.target, params.test_fraction, seed)
    write_seed_format(to_uint8(data.images), data.target, splits, out_dir)
    print(
        f"digits: wrote {len(splits['train'])} train and {len(splits['test'])} test images "
        f"to {out_dir}"
    )


if __name__ == "__main__":
    main()
