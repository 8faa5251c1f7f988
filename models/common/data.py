"""Training input: the decoded .npz cache -> tf.data with shuffling, batching and prefetch.

The cache (written by data_processing.decode) is read once; no image is decoded per epoch.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # uint8 [N, K] multi-hot
    file_names: np.ndarray  # str [N]
    categories: list[str]  # K names, output index order
    label_mode: str  # "single" | "multi"

    @property
    def targets(self) -> np.ndarray:
        """Class indices [N] for single-label data, float multi-hot [N, K] for multi-label."""
        if self.label_mode == "single":
            return self.labels.argmax(axis=1).astype(np.int64)
        return self.labels.astype(np.float32)

    def take(self, idx: np.ndarray) -> "Split":
        return Split(
            self.images[idx],
            self.labels[idx],
            self.file_names[idx],
            self.categories,
            self.label_mode,
        )


def load_split(path: Path) -> Split:
    """Load one split of the decoded cache (no pickle: allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        return Split(
            z["images"],
            z["labels"],
            z["file_names"],
            [str(c) for c in z["categories"]],
            str(z["label_mode"]),
        )


def split_train_val(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out a stratified (single-label) or random (multi-label), seeded validation share."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split.images))
    stratify = split.targets if split.label_mode == "single" else None
    train, val = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    return split.take(np.sort(train)), split.take(np.sort(val))


def to_dataset(split: Split, batch_size: int, shuffle: bool, seed: int):
    """Return a tf.data.Dataset of (uint8 images, targets) batches with prefetch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.images, split.targets))
    if shuffle:
        ds = ds.shuffle(len(split.images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
