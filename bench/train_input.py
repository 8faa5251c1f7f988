"""Training-input benchmark: epoch time from our input pipeline against an in-memory array.

Ours: the decoded `.npz` cache (as data_processing.decode writes it) loaded with
`models.common.data.load_split` and fed through `to_dataset` (tf.data: shuffle, batch,
prefetch). Baseline: `model.fit(x, y)` on NumPy arrays already in memory, the fastest input
Keras has. Same model (the project's `cnn`), same data, same batch size, in one run; epochs
alternate between the two so machine noise hits both. The first epoch of each (tracing)
is not timed. Target: ours / in-memory <= 1.10.

Writes bench/results/train_input.json and prints a table.

Run (from the repository root): .venv/bin/python -m bench.train_input [--n 20000] [--epochs 3]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "train_input.json"


def make_cache(path: Path, n: int, classes: int = 10, side: int = 28) -> None:
    """Write a decoded cache of n random 28x28x1 images, in the decode stage's npz layout."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    np.savez(
        path,
        images=rng.integers(0, 256, (n, side, side, 1), dtype=np.uint8),
        labels=np.eye(classes, dtype=np.uint8)[labels],
        file_names=np.array([f"train/{i:05d}.png" for i in range(n)]),
        categories=np.array([str(c) for c in range(classes)]),
        label_mode=np.array("single"),
    )


class EpochTimer:
    """A Keras callback factory recording wall seconds per epoch."""

    def __init__(self) -> None:
        import keras

        times: list[float] = []

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.start)

        self.times, self.callback = times, _Timer()


def build_model():
    import models
    from data_processing.params import load_params
    from models.common.spec import ModelSpec

    arch = models.get("cnn")
    spec = ModelSpec(channels=1, num_classes=10, image_size=(28, 28))
    model = arch.build(spec, load_params("models.cnn", arch.Params))
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    return model


def run(n: int, epochs: int, batch: int) -> dict:
    """Alternate one epoch of each input `epochs` times after a warm-up; return timings."""
    from models.common.data import load_split, to_dataset
    from models.common.training import seed_everything

    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "train.npz"
        make_cache(cache, n)
        start = time.perf_counter()
        split = load_split(cache)
        load_s = time.perf_counter() - start
        dataset = to_dataset(split, batch, shuffle=True, seed=0)
        x, y = split.images.copy(), split.targets.copy()
        ours, base = build_model(), build_model()
        t_ours, t_base = EpochTimer(), EpochTimer()
        for _ in range(epochs + 1):  # the first round is the untimed warm-up
            ours.fit(dataset, epochs=1, verbose=0, callbacks=[t_ours.callback])
            base.fit(
                x,
                y,
                batch_size=batch,
                epochs=1,
                shuffle=True,
                verbose=0,
                callbacks=[t_base.callback],
            )
    ours_s, base_s = statistics.median(t_ours.times[1:]), statistics.median(t_base.times[1:])
    return {
        "images": n,
        "batch_size": batch,
        "timed_epochs": epochs,
        "cache_load_s": load_s,
        "ours_epoch_s": ours_s,
        "in_memory_epoch_s": base_s,
        "ratio": ours_s / base_s,
        "ours_all_s": t_ours.times,
        "in_memory_all_s": t_base.times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    from models.common.quiet import import_tensorflow

    import_tensorflow()
    result = run(args.n, args.epochs, args.batch)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"train_input: {args.n} images 28x28x1, cnn, batch {args.batch}, median of "
        f"{args.epochs} epochs each (alternating, after a warm-up)\n"
    )
    print("| input | epoch s | ratio |\n|---|---:|---:|")
    print(f"| in-memory NumPy (baseline) | {result['in_memory_epoch_s']:.2f} | 1.00x |")
    print(
        f"| npz cache -> tf.data (ours) | {result['ours_epoch_s']:.2f} | {result['ratio']:.2f}x |"
    )
    print(f"\ncache load: {result['cache_load_s'] * 1000:.0f} ms -> {RESULTS}")


if __name__ == "__main__":
    main()
