"""Shard one normalized dataset into fixed-length binary records at the size the model uses.

Reads datasets/normalized/<name>/<split>.json and the raw images; writes <out_dir>/:
    meta.json                       format, image size, channels, categories, label mode,
                                    record layout and each split's shard files and counts
    <split>-00000-of-00004.rec ...  records of `record_bytes`: K label bytes (multi-hot over
                                    the categories), then uint8 pixels [h, w, channels]
    <split>-labels.npy              uint8 [N, K], the labels alone (stratified splits, metrics)
    <split>-files.txt               file names, one per line, in record order
    samples.json                    a seeded sample of raw test files (base64 bytes) that the
                                    deploy test and the server's self-check replay

Every image goes through data_processing.images.load: JPEG draft decoding, EXIF rotation, mode
conversion and one Pillow resize to `size`, the same function every bundle's `prepare` calls.
Decoding runs in a process pool over every core; records are written in the normalized JSON's
order, so the same data and params give the same bytes. channels is 1 when every image is
grayscale, else 3. Shards hold about `shard.shard_mb` MiB each.

Run: python -m data_processing.shard datasets/raw/digits datasets/normalized/digits \
         datasets/shards/digits
"""

import base64
import os
import random
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from pydantic import Field

from data_processing import schema
from data_processing.core import cli, progress
from data_processing.core.errors import DataError, exit_on_error
from data_processing.core.io import staged_dir, write_json, write_text
from data_processing.core.params import BaseParams, Params, load_params, read_params
from data_processing.images import channels_for, load, read_mode

FORMAT = "reprovision-records/1"
CHUNK = 32  # images per pool task: amortises the IPC, keeps the progress bar moving


class ShardParams(Params):
    image_size: dict[str, list[int]] = {}  # dataset -> [h, w] stored; unlisted: train.image_size
    shard_mb: float = Field(default=128, gt=0)  # target shard size (TFDS: 64 MiB to 1 GiB)
    workers: int = Field(default=0, ge=0)  # decoding processes; 0: every core
    n_samples: int = Field(default=32, ge=0)  # raw test files kept for the deploy test
    max_sample_bytes: int = 2_000_000  # larger files are not chosen as samples


def stored_size(dataset: str, params: ShardParams) -> tuple[int, int]:
    """(height, width) the records hold: params shard.image_size[dataset] or train.image_size."""
    size = params.image_size.get(dataset) or read_params().get("train", {}).get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise DataError("params.yaml", "[height, width] integers", field="train.image_size")
    return int(size[0]), int(size[1])


_job: dict = {}  # the worker's arguments, set once per process by _init


def _init(raw_dir: str, size: tuple[int, int]) -> None:
    _job.update(raw_dir=Path(raw_dir), size=size)


def _mode(file_name: str) -> str:
    return read_mode(_job["raw_dir"] / file_name)


def _write(task: tuple[str, str, int, bytes, int]) -> None:
    """Decode one image and write its record in place: the pixels never cross to the parent,
    which would otherwise spend as long unpickling them as a worker spends decoding."""
    name, shard, offset, label, channels = task
    pixels = load(_job["raw_dir"] / name, channels, _job["size"]).tobytes()
    fds = _job.setdefault("fds", {})
    if shard not in fds:
        if len(fds) > 16:  # shards are written in order: old ones are done
            for fd in fds.values():
                os.close(fd)
            fds.clear()
        fds[shard] = os.open(shard, os.O_WRONLY)
    os.pwrite(fds[shard], label + pixels, offset)


def _guarded(fn, items: list) -> list[tuple[bool, object]]:
    """(True, fn(item)) per item; (False, message) ends the chunk at the first bad image.
    A message, not the DataError: exceptions cross the process boundary poorly."""
    out = []
    for item in items:
        try:
            out.append((True, fn(item)))
        except DataError as err:
            return out + [(False, str(err))]
    return out


def _modes(names: list[str]) -> list:
    return _guarded(_mode, names)


def _records(tasks: list) -> list:
    return _guarded(_write, tasks)


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _raise_first(chunk: list[tuple[bool, object]]) -> None:
    for ok, value in chunk:
        if not ok:
            path, _, problem = str(value).partition(": expected ")
            raise DataError(path, problem or str(value))


def _results(pool, fn, items: list, desc: str) -> Iterator:
    """fn's results for every item, in order, with a progress bar; raise the first error."""
    with progress.bar(len(items), desc) as bar:
        for chunk in pool.imap(fn, _chunks(items)):
            _raise_first(chunk)
            bar.update(len(chunk))
            yield from (value for _, value in chunk)


def _label_rows(dataset: schema.Dataset) -> np.ndarray:
    labels = np.zeros((len(dataset.images), len(dataset.categories)), np.uint8)
    for row, image in enumerate(dataset.images):
        labels[row, [c - 1 for c in image.labels or ()]] = 1
    return labels


def write_split(pool, split: str, dataset: schema.Dataset, out: Path, layout: dict) -> dict:
    """Write one split's shards, labels and file names; return its meta.json entry."""
    names = [i.file_name for i in dataset.images]
    labels = _label_rows(dataset)
    n_shards = max(1, int(-(-len(names) * layout["record_bytes"] // (layout["shard_mb"] * 2**20))))
    bounds = [len(names) * i // n_shards for i in range(n_shards + 1)]
    size, channels, shards = layout["record_bytes"], layout["channels"], []
    bar = progress.bar(len(names), f"shard {split}")
    for s in range(n_shards):  # one shard's tasks at a time: Pool.imap queues all it is given
        file = f"{split}-{s:05d}-of-{n_shards:05d}.rec"
        count = bounds[s + 1] - bounds[s]
        with open(out / file, "wb") as f:
            f.truncate(count * size)  # the workers write each record at row x size
        path, rows = str(out / file), range(bounds[s], bounds[s + 1])
        tasks = [
            (names[row], path, (row - bounds[s]) * size, labels[row].tobytes(), channels)
            for row in rows
        ]
        for chunk in pool.imap(_records, _chunks(tasks)):
            _raise_first(chunk)
            bar.update(len(chunk))
        shards.append({"file": file, "count": count})
    bar.close()
    np.save(out / f"{split}-labels.npy", labels)
    write_text(out / f"{split}-files.txt", "".join(f"{n}\n" for n in names))
    return {"count": len(names), "shards": shards}


def samples(raw_dir: Path, test: schema.Dataset, params: ShardParams, seed: int) -> dict:
    """A seeded sample of test files small enough to embed, with their record indices."""
    candidates = [
        (row, i.file_name)
        for row, i in enumerate(test.images)
        if os.path.getsize(raw_dir / i.file_name) <= params.max_sample_bytes
    ]
    chosen = sorted(random.Random(seed).sample(candidates, min(params.n_samples, len(candidates))))
    return {
        "split": "test",
        "images": [
            {
                "index": row,
                "file_name": name,
                "data": base64.b64encode((raw_dir / name).read_bytes()).decode("ascii"),
            }
            for row, name in chosen
        ],
    }


def shard(raw_dir: Path, norm_dir: Path, out: Path, params: ShardParams, seed: int) -> dict:
    """Write every split of the dataset into `out`; return meta.json's content."""
    size = stored_size(raw_dir.name, params)
    workers = params.workers or len(os.sched_getaffinity(0))
    # The pool starts before the records load: forked workers would otherwise each carry a
    # copy-on-write view of them, and their memory would grow with the dataset.
    with Pool(workers, _init, (str(raw_dir), size)) as pool:
        splits = {p.stem: schema.load(p) for p in sorted(norm_dir.glob("*.json"))}
        if "test" not in splits:
            raise DataError(norm_dir, "train.json and test.json", found=sorted(splits))
        names = [i.file_name for d in splits.values() for i in d.images]
        channels = channels_for(set(_results(pool, _modes, names, "headers")))
        del names
        first = next(iter(splits.values()))
        layout = {
            "label_bytes": len(first.categories),
            "record_bytes": len(first.categories) + size[0] * size[1] * channels,
            "channels": channels,
            "shard_mb": params.shard_mb,
        }
        meta = {
            "format": FORMAT,
            "image_size": list(size),
            "channels": channels,
            "categories": first.category_names(),
            "label_mode": first.label_mode,
            "label_bytes": layout["label_bytes"],
            "record_bytes": layout["record_bytes"],
            "splits": {},
        }
        for split, dataset in splits.items():
            meta["splits"][split] = write_split(pool, split, dataset, out, layout)
    write_json(out / "samples.json", samples(raw_dir, splits["test"], params, seed))
    write_json(out / "meta.json", meta)
    return meta


@exit_on_error
def main() -> None:
    raw_dir, norm_dir, out_dir = cli.paths(
        __doc__,
        cli.RAW_DIR,
        cli.NORM_DIR,
        ("out_dir", "where the shards are written (datasets/shards/<name>)"),
    )
    params = load_params("shard", ShardParams)
    seed = load_params("base", BaseParams).seed
    with staged_dir(out_dir) as tmp:
        meta = shard(raw_dir, norm_dir, tmp, params, seed)
    h, w = meta["image_size"]
    counts = ", ".join(f"{s} {m['count']}" for s, m in meta["splits"].items())
    print(f"shard: {raw_dir.name}: {counts} at {h}x{w}x{meta['channels']} -> {out_dir}")


if __name__ == "__main__":
    main()
