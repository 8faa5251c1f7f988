"""Training and evaluation input: the dataset's shards (data_processing/shard.py) -> tf.data.

Shards stream, as TF's official input reader does: shuffled shard files, interleaved
readers, a bounded shuffle buffer, batching and prefetch. No split is held in memory unless
it fits the caller's `cache_bytes`: the validation split is a set of record indices filtered
out of the same stream, and the few images looked up by index (failure cases, the ONNX
check) come through np.memmap.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_processing.core.errors import DataError


@dataclass(frozen=True)
class Shards:
    """One dataset's shard folder: its meta.json and per-split files."""

    root: Path
    meta: dict

    @classmethod
    def open(cls, root: Path) -> "Shards":
        path = Path(root) / "meta.json"
        if not path.is_file():
            raise DataError(path, "the dataset's shards (dvc repro runs the shard stage)")
        return cls(Path(root), json.loads(path.read_text()))

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    @property
    def label_mode(self) -> str:
        return self.meta["label_mode"]

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every stored image."""
        return tuple(self.meta["image_size"])

    def count(self, split: str) -> int:
        return int(self.meta["splits"][split]["count"])

    def labels(self, split: str) -> np.ndarray:
        """uint8 [N, K] multi-hot labels, memory-mapped."""
        return np.load(self.root / f"{split}-labels.npy", mmap_mode="r")

    def samples(self) -> dict:
        """samples.json: the sample test files (base64) with their record indices."""
        return json.loads((self.root / "samples.json").read_text())

    def file_names(self, split: str) -> list[str]:
        return (self.root / f"{split}-files.txt").read_text(encoding="utf-8").splitlines()

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """Class indices [N] for single-label data, float multi-hot [N, K] for multi-label."""
        if self.label_mode == "single":
            return np.asarray(labels).argmax(axis=1).astype(np.int64)
        return np.asarray(labels, np.float32)

    def records(self, split: str, indices) -> np.ndarray:
        """uint8 [n, record_bytes] for record indices (random access through np.memmap)."""
        indices = np.asarray(indices, np.int64)
        shards = self.meta["splits"][split]["shards"]
        starts = np.cumsum([0] + [s["count"] for s in shards])
        out = np.zeros((len(indices), self.meta["record_bytes"]), np.uint8)
        which = np.searchsorted(starts, indices, side="right") - 1
        for shard in np.unique(which):
            file = self.root / shards[shard]["file"]
            records = np.memmap(file, np.uint8, "r").reshape(-1, self.meta["record_bytes"])
            rows = np.flatnonzero(which == shard)
            out[rows] = records[indices[rows] - starts[shard]]
        return out

    def images(self, split: str, indices) -> np.ndarray:
        """uint8 [n, h, w, C] for record indices."""
        pixels = self.records(split, indices)[:, self.meta["label_bytes"] :]
        return pixels.reshape(-1, *self.image_size, self.channels)

    def dataset(
        self,
        split: str,
        batch_size: int,
        keep: np.ndarray | None = None,
        shuffle_seed: int | None = None,
        shuffle_buffer: int = 4096,
        with_index: bool = False,
        cache_bytes: int = 0,
    ):
        """A tf.data.Dataset of (uint8 images [B, h, w, C], targets) batches, streamed.

        Args:
            split: "train" or "test".
            batch_size: images per batch (the last batch may be smaller).
            keep: bool [N] over the split's records; only those are read (a val split).
            shuffle_seed: None reads in record order; else shard order and a bounded
                shuffle buffer are reshuffled every epoch from this seed.
            shuffle_buffer: images held by the shuffle (memory: buffer x record bytes).
            with_index: batches are (indices, images, targets), for evaluation.
            cache_bytes: when the chosen records take at most this many bytes, they are
                read once into one array and served from memory (bounded by this size).
        """
        import tensorflow as tf

        chosen = np.arange(self.count(split)) if keep is None else np.flatnonzero(keep)
        if len(chosen) * self.meta["record_bytes"] <= cache_bytes:
            return self._in_memory(
                split, chosen, batch_size, shuffle_seed, shuffle_buffer, with_index
            )
        ds = self._stream(split, keep, shuffle_seed)
        k, (h, w), c = self.meta["label_bytes"], self.image_size, self.channels
        single = self.label_mode == "single"

        def parse(index, record):  # a batch of records
            raw = tf.io.decode_raw(record, tf.uint8)
            images = tf.reshape(raw[:, k:], [-1, h, w, c])
            labels = raw[:, :k]
            targets = tf.argmax(labels, axis=1) if single else tf.cast(labels, tf.float32)
            return (index, images, targets) if with_index else (images, targets)

        if shuffle_seed is not None:
            ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-len(chosen) // batch_size)))
        return ds.prefetch(tf.data.AUTOTUNE)

    def _stream(self, split: str, keep: np.ndarray | None, shuffle_seed: int | None):
        """(index, record bytes) of the split's chosen records, read shard by shard (in a
        shuffled shard order, 4 shards interleaved, when shuffle_seed is given)."""
        import tensorflow as tf

        info = self.meta["splits"][split]
        files = [str(self.root / s["file"]) for s in info["shards"]]
        counts = [int(s["count"]) for s in info["shards"]]
        starts = np.cumsum([0] + counts[:-1]).tolist()
        size = self.meta["record_bytes"]
        ds = tf.data.Dataset.from_tensor_slices(
            (files, tf.constant(starts, tf.int64), tf.constant(counts, tf.int64))
        )
        if shuffle_seed is not None:
            ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)

        def read(file, start, count):
            index = tf.data.Dataset.range(start, start + count)
            return tf.data.Dataset.zip((index, tf.data.FixedLengthRecordDataset(file, size)))

        parallel = shuffle_seed is not None and len(files) > 1
        ds = ds.interleave(
            read,
            cycle_length=min(len(files), 4) if parallel else 1,
            block_length=16,
            **(
                {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if parallel else {}
            ),
        )
        if keep is not None:  # in blocks: a per-record filter halves the reader's speed
            mask = tf.constant(np.asarray(keep, bool))
            kept = lambda i, r: (  # noqa: E731
                tf.boolean_mask(i, tf.gather(mask, i)),
                tf.boolean_mask(r, tf.gather(mask, i)),
            )
            ds = ds.batch(256).map(kept).unbatch()
        return ds

    def _in_memory(self, split, chosen, batch_size, shuffle_seed, shuffle_buffer, with_index):
        """`dataset` for a small selection: one array, shuffled and batched as from memory."""
        import tensorflow as tf

        records = self.records(split, chosen)
        k = self.meta["label_bytes"]
        images = records[:, k:].reshape(-1, *self.image_size, self.channels)
        targets = self.targets(records[:, :k])
        ds = tf.data.Dataset.from_tensor_slices(
            (chosen, images, targets) if with_index else (images, targets)
        )
        if shuffle_seed is not None:
            ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def split_train_val(shards: Shards, val_fraction: float, seed: int) -> np.ndarray:
    """bool [N] over the train records: True for the validation share (stratified for single
    label, random for multi-label, seeded)."""
    from sklearn.model_selection import train_test_split

    labels = shards.labels("train")
    idx = np.arange(len(labels))
    stratify = shards.targets(labels) if shards.label_mode == "single" else None
    _, val = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)
    mask = np.zeros(len(idx), bool)
    mask[val] = True
    return mask
