"""Training-input benchmark: epoch time fed by the shards against an in-memory array and Keras's
image_dataset_from_directory.

Generates N photo-like RGB JPEGs (tests/photos.py, `modes=False`, sides 160-640 px, 10
classes; the same photos as bench/shard.py) in the seed folder format, normalizes them and runs
the shard stage at size x size (data_processing.shard). The train split less a validation share
(models.common.data.split_train_val, params `train.val_fraction`, seed 0) is what every input
feeds, so every epoch is the same images in the same number of steps:

    shards     ours: `Shards.dataset("train", batch, keep=~val, shuffle_seed=0,
               shuffle_buffer=4096)`, as models/train.py feeds training (tf.data: shard files,
               FixedLengthRecordDataset, filter by the val mask, bounded shuffle, batch,
               decode_raw, prefetch)
    in-memory  the floor: the very same records loaded into one uint8 array (`Shards.images`)
               and fed by `Dataset.from_tensor_slices((x, y)).shuffle(len).batch().prefetch()`
    directory  `keras.utils.image_dataset_from_directory` (no `.cache()`) on a class-folder
               view of the same JPEGs (per-class subfolders of symlinks to the raw files),
               `image_size=(size, size)`, shuffle, `.prefetch(AUTOTUNE)`: every epoch decodes
               every JPEG at full size (tf.io.decode_image) and resizes it (tf.image.resize)

Each input trains its own copy of the project's `cnn` (built as models/train.py builds it:
`models.get("cnn").build(ModelSpec(...), params models.cnn)`, input size = the stored size,
compiled as models/common/training.py compiles it with hparams `quick`'s optimizer). Each
round fits each input for two epochs over its repeated dataset, as training fits, and times the
second (a steady-state epoch), the three inputs round-robin: a first round of warm-up (tracing)
is not timed, then `--epochs` timed rounds; the best epoch of each input counts (the median is
given too). Epoch time is wall time between Keras's on_epoch_begin and on_epoch_end. Then each
input is iterated alone (no model), round-robin, `--epochs` times: images/s of the reader
itself.

Targets: shards epoch time <= 1.10 x in-memory; directory epoch time >= 2 x shards.
Caches are warm (the JPEGs and shards were just written).

Writes bench/results/train_input.json (git-ignored) and prints Markdown tables.

Run (from the repository root): .venv/bin/python -m bench.train_input [--n 3000] [--size 64]
                                 [--epochs 2] [--batch 64]   (or: make bench)
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # the shard stage's progress bars

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402
from bench.shard import DATASET, SEED, SIDES, generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_input.json"
INPUTS = ("shards", "in-memory", "directory")
SHUFFLE_BUFFER = 4096  # params train.shuffle_buffer's default
# (key, what, limit, higher is better)
TARGETS = (
    ("shards_vs_memory", "shards epoch <= 1.10 x in-memory epoch", 1.10, False),
    ("directory_vs_shards", "directory epoch >= 2 x shards epoch", 2.0, True),
)


def prepare(work: Path, n: int, size: int) -> dict:
    """Photos, normalized JSON, shards at size x size, the val mask and the class-folder view."""
    from data_processing.core.params import load_params
    from data_processing.normalize import normalize, write
    from data_processing.shard import ShardParams, shard
    from models.common.data import Shards, split_train_val
    from models.common.spec import TrainParams

    raw, norm, out = (work / d / DATASET for d in ("raw", "normalized", "shards"))
    start = time.perf_counter()
    generate(raw, n)
    generate_s = time.perf_counter() - start
    write(normalize(raw, "seed"), norm)
    out.mkdir(parents=True)
    start = time.perf_counter()
    shard(raw, norm, out, ShardParams(image_size={DATASET: [size, size]}), SEED)
    shard_s = time.perf_counter() - start
    shards = Shards.open(out)
    val = split_train_val(shards, load_params("train", TrainParams).val_fraction, SEED)
    rows = np.flatnonzero(~val)
    start = time.perf_counter()
    images = shards.images("train", rows)
    load_s = time.perf_counter() - start
    targets = shards.targets(shards.labels("train"))[rows]
    view = work / "by_class"  # image_dataset_from_directory wants <class>/<image>
    names = shards.file_names("train")
    for row, label in zip(rows, targets, strict=True):
        folder = view / shards.categories[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(names[row]).name).symlink_to(raw / names[row])
    return {
        "shards": shards,
        "val": val,
        "x": images,
        "y": targets,
        "view": view,
        "generate_s": generate_s,
        "shard_s": shard_s,
        "array_load_s": load_s,
    }


def datasets(data: dict, size: int, batch: int) -> dict:
    """The three inputs, each a tf.data.Dataset of (uint8 images, class index) batches."""
    import keras
    import tensorflow as tf

    shards, x, y = data["shards"], data["x"], data["y"]
    memory = tf.data.Dataset.from_tensor_slices((x, y))
    directory = keras.utils.image_dataset_from_directory(
        data["view"],
        labels="inferred",
        label_mode="int",
        class_names=shards.categories,
        image_size=(size, size),
        batch_size=batch,
        shuffle=True,
        seed=SEED,
        verbose=False,
    )
    return {
        "shards": shards.dataset(
            "train", batch, keep=~data["val"], shuffle_seed=SEED, shuffle_buffer=SHUFFLE_BUFFER
        ),
        "in-memory": memory.shuffle(len(x), seed=SEED).batch(batch).prefetch(tf.data.AUTOTUNE),
        "directory": directory.prefetch(tf.data.AUTOTUNE),
    }


class EpochTimer:
    """A Keras callback recording wall seconds per epoch (on_epoch_begin to on_epoch_end)."""

    def __init__(self) -> None:
        import keras

        times: list[float] = []

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.start)

        self.times, self.callback = times, _Timer()


def build_model(size: int, channels: int, classes: int, steps: int, name: str = "cnn"):
    """A project model (cnn by default) at the stored size, compiled as training does."""
    import models
    from data_processing.core.params import load_params
    from models.common.spec import HParams, ModelSpec
    from models.common.training import optimizer

    arch = models.get(name)
    spec = ModelSpec(channels=channels, num_classes=classes, image_size=(size, size))
    model = arch.build(spec, load_params(f"models.{name}", arch.Params))
    model.compile(
        optimizer=optimizer(load_params("hparams.quick", HParams), steps),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def train_epochs(
    inputs: dict, data: dict, size: int, batch: int, epochs: int, model: str = "cnn"
) -> dict:
    """Inputs round-robin, warm-up round first; wall seconds per epoch.

    Each round is one `fit` of two epochs over the repeated dataset, as models/common/training.py
    fits, and only the second epoch counts: a steady-state epoch, whose reading may overlap the
    end of the epoch before it, as in training.
    """
    shards = data["shards"]
    steps = -(-len(data["x"]) // batch)
    timers = {name: EpochTimer() for name in inputs}
    nets = {
        name: build_model(size, shards.channels, len(shards.categories), steps, model)
        for name in inputs
    }
    for _ in range(epochs + 1):  # round 0: warm-up (tracing), not counted
        for name, ds in inputs.items():
            nets[name].fit(
                ds.repeat(),
                steps_per_epoch=steps,
                epochs=2,
                shuffle=False,  # each dataset shuffles itself
                verbose=0,
                callbacks=[timers[name].callback],
            )
    return {name: timer.times[1::2] for name, timer in timers.items()}


def read_only(inputs: dict, reps: int) -> dict:
    """Each input iterated once, no model; round-robin, after one untimed pass. Per input:
    {"pass": [seconds for the whole pass], "first": [seconds to the first batch]}."""
    times = {name: {"pass": [], "first": []} for name in inputs}
    for rep in range(reps + 1):
        for name, ds in inputs.items():
            start = time.perf_counter()
            batches = iter(ds)
            next(batches)
            first = time.perf_counter() - start
            for _ in batches:
                pass
            if rep:
                times[name]["pass"].append(time.perf_counter() - start)
                times[name]["first"].append(first)
            del batches  # untimed: a spent iterator's teardown (directory: 0.4 s) is not reading
    return times


def summarize(epochs: dict, reads: dict, images: int) -> dict:
    """Rows per input (best and median epoch, ratios to the in-memory floor) and targets."""
    timed = {name: runs[1:] for name, runs in epochs.items()}
    best = {name: min(runs) for name, runs in timed.items()}
    median = {name: statistics.median(runs) for name, runs in timed.items()}
    rows = [
        {
            "input": name,
            "warmup_epoch_s": round(epochs[name][0], 3),
            "epochs_s": [round(t, 3) for t in timed[name]],
            "best_epoch_s": round(best[name], 3),
            "median_epoch_s": round(median[name], 3),
            "vs_memory": round(best[name] / best["in-memory"], 3),
            "median_vs_memory": round(median[name] / median["in-memory"], 3),
            "train_images_per_s": round(images / best[name], 1),
            "read_only_s": [round(t, 3) for t in reads[name]["pass"]],
            "read_only_images_per_s": round(images / min(reads[name]["pass"]), 1),
            "first_batch_s": [round(t, 3) for t in reads[name]["first"]],
        }
        for name in epochs
    ]
    ratios = {
        "shards_vs_memory": (
            best["shards"] / best["in-memory"],
            median["shards"] / median["in-memory"],
        ),
        "directory_vs_shards": (
            best["directory"] / best["shards"],
            median["directory"] / median["shards"],
        ),
    }
    targets = []
    for key, what, limit, higher in TARGETS:
        value, value_median = ratios[key]
        targets.append(
            {
                "target": what,
                "value": round(value, 3),
                "median_value": round(value_median, 3),
                "limit": limit,
                "pass": value >= limit if higher else value <= limit,
            }
        )
    return {"rows": rows, "targets": targets}


def table(result: dict) -> str:
    """Return the rows and targets as Markdown tables."""
    lines = [
        "| input | warm-up s | best epoch s | median epoch s | vs in-memory (best / median) | "
        "train images/s | input alone, images/s | input alone, first batch s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['input']} | {r['warmup_epoch_s']:.2f} | {r['best_epoch_s']:.2f} | "
            f"{r['median_epoch_s']:.2f} | {r['vs_memory']:.2f}x / {r['median_vs_memory']:.2f}x "
            f"| {r['train_images_per_s']:,.0f} | {r['read_only_images_per_s']:,.0f} | "
            f"{min(r['first_batch_s']):.2f} |"
        )
    lines += ["", "| target | best | median | |", "|---|---:|---:|---|"]
    for t in result["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        lines.append(
            f"| {t['target']} | {t['value']:.2f}x | {t['median_value']:.2f}x | {verdict} |"
        )
    return "\n".join(lines)


def run(work: Path, n: int, size: int, epochs: int, batch: int, model: str = "cnn") -> dict:
    """Prepare the data under `work`, time every input, return the results."""
    from models.common.quiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    from models.common.training import seed_everything

    seed_everything(SEED)  # as models/train.py does (op determinism included)
    load_before = os.getloadavg()[0]
    data = prepare(work, n, size)
    inputs = datasets(data, size, batch)
    start = time.perf_counter()
    epoch_times = train_epochs(inputs, data, size, batch, epochs, model)
    train_s = time.perf_counter() - start
    reads = read_only(inputs, epochs)
    images = len(data["x"])
    result = {
        "benchmark": "train_input",
        "date": datetime.date.today().isoformat(),
        "photos": n,
        "image_sides": list(SIDES),
        "train_images_per_epoch": images,
        "val_images": int(data["val"].sum()),
        "stored_size": [size, size, data["shards"].channels],
        "batch_size": batch,
        "steps_per_epoch": -(-images // batch),
        "timed_epochs": epochs,
        "statistic": "best epoch of each input after a warm-up, round-robin (medians too)",
        "generate_s": round(data["generate_s"], 2),
        "shard_s": round(data["shard_s"], 2),
        "array_load_s": round(data["array_load_s"], 3),
        "training_s": round(train_s, 1),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": common.machine(tensorflow=tf.__version__, keras=keras.__version__),
    }
    result.update(summarize(epoch_times, reads, images))
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = common.parser("train_input", __doc__)
    parser.add_argument("--n", type=int, default=3000, help="photos to generate (both splits)")
    parser.add_argument("--size", type=int, default=64, help="stored and model side")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of each input")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", default="cnn", help="a project model: the step's cost")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if args.n < 100 or args.epochs < 1 or args.size < 16 or args.batch < 1:
        parser.error("--n >= 100, --epochs >= 1, --size >= 16 and --batch >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="bench_train_input_"))
    try:
        result = run(work, args.n, args.size, args.epochs, args.batch, args.model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    h, w, c = result["stored_size"]
    print(
        f"train_input: {args.n:,} photos, {result['train_images_per_epoch']:,} train images an "
        f"epoch at {h}x{w}x{c}, {args.model}, batch {args.batch}, best of {args.epochs} epochs "
        "each "
        f"(round-robin, after a warm-up); 1-min load {result['load_average_1min'][0]} -> "
        f"{result['load_average_1min'][1]}\n"
    )
    print(table(result))
    print(
        f"\nshard stage {result['shard_s']} s; array load {result['array_load_s']} s; "
        f"training {result['training_s']} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
