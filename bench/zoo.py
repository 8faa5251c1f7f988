"""Zoo benchmark: does every architecture train on a few hundred real-looking photos?

Three small generated datasets (tests/photos.py, seed folder format, a fifth held out for
test, sides 64-320 px):

    gray      600 grayscale JPEGs, 2 classes (horizontal or vertical stripes) drawn on a patch
              at a random place and scale over a lit, noisy background ("grayscale few-class")
    textures  400 RGB JPEGs, 3 classes (horizontal, vertical or diagonal stripes) filling the
              picture, in random colours ("RGB textures")
    photos    200 photos, 3 classes as in gray but in colour, a few % odd modes (grayscale,
              RGBA, palette, CMYK, 16-bit, EXIF-rotated): 5 training steps an epoch, where
              Keras's BatchNorm moving averages fail. Reported, not part of the target: an MLP
              has no translation invariance, and 136 training images do not teach it one.

Each is normalized and sharded as the stages do (gray at train.image_size 28x28, the others at
64x64). Every cell (model x hyperparameter set) then trains with `models.train.train`, the
train stage's own function, with params.yaml's `train`, `hparams.<set>`, `models.<model>` and
`base.seed`, and its best checkpoint is scored on the test split with evaluate's
`metrics.Scores` (accuracy, collapsed, above chance).

Figure: each cell's test accuracy as a ratio of the best cell's on the same dataset (the
baseline, measured in the same run). Target: every model's `base` cell >= 0.9 on gray and
textures.

Writes bench/results/zoo.json (zoo-<stem>.json with --params; git-ignored) and prints a
Markdown table.

Run (from the repository root): .venv/bin/python -m bench.zoo
                                 [--datasets gray textures] [--models ...] [--hparams ...]
                                 [--params bench/zoo_before.yaml]  (the defaults before issue 11)
"""

import contextlib
import datetime
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common

RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# name -> write_photo_dataset options, images, image size, whether the target applies
DATASETS = {
    "gray": ({"classes": 2, "gray": True}, 600, 28, True),
    "textures": ({"classes": 3, "texture": True, "modes": False}, 400, 64, True),
    "photos": ({"classes": 3}, 200, 64, False),
}
TARGET = 0.9
SEED = 0


def prepare(work: Path, name: str) -> Path:
    """Photos, normalized JSON and shards for one dataset under work; return the shards."""
    from data_processing.normalize import normalize, write
    from data_processing.shard import ShardParams, shard
    from tests.photos import write_photo_dataset  # tests/ is a namespace package

    options, n, size, _ = DATASETS[name]
    raw, norm, out = (work / "datasets" / d / name for d in ("raw", "normalized", "shards"))
    write_photo_dataset(raw, n, min_side=64, max_side=320, seed=SEED, workers=2, **options)
    write(normalize(raw, "seed"), norm)
    out.mkdir(parents=True)
    shard(raw, norm, out, ShardParams(image_size={name: [size, size]}), SEED)
    return out


def score(model_file: Path, shards) -> dict:
    """Test accuracy and evaluate's health flags for a saved model."""
    import keras

    from models.common import metrics

    model = keras.saving.load_model(model_file)
    rows = np.arange(shards.count("test"))
    labels = shards.labels("test")[rows]
    probs = model.predict(shards.images("test", rows), batch_size=256, verbose=0)
    scores = metrics.Scores(shards.categories, shards.label_mode)
    scores.update(labels, probs)
    result = scores.result()
    return {k: result[k] for k in ("accuracy", "f1_macro", "collapsed", "above_chance")}


def run_cell(
    shards_dir: Path, model: str, hparams: str, size: int, out: Path, params_file: Path
) -> dict:
    """Train one cell as the train stage does, then score it on the test split."""
    import models
    from data_processing.core.params import BaseParams, load_params
    from models.common.data import Shards
    from models.common.paths import Cell
    from models.common.spec import HParams, TrainParams
    from models.train import train

    params = load_params("train", TrainParams, params_file)
    params = params.model_copy(update={"image_size": [size, size]})
    arch = load_params(f"models.{model}", models.get(model).Params, params_file)
    sets = load_params(f"hparams.{hparams}", HParams, params_file)
    seed = load_params("base", BaseParams, params_file).seed
    cell = Cell(shards_dir.name, model, hparams)
    out.mkdir(parents=True)
    start = time.perf_counter()
    with (
        contextlib.chdir(shards_dir.parents[2]),  # Cell paths are relative: datasets/shards/..
        contextlib.redirect_stdout(io.StringIO()),  # Keras's per-epoch lines
    ):
        summary = train(cell, params, sets, arch, seed, out)
    seconds = time.perf_counter() - start
    result = score(out / "model.keras", Shards.open(shards_dir))
    return {
        "dataset": shards_dir.name,
        "model": model,
        "hparams": hparams,
        **result,
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "seconds": round(seconds, 1),
    }


def add_ratios(cells: list[dict]) -> None:
    """Each cell's accuracy over the best cell's on its dataset (`ratio`)."""
    for dataset in {c["dataset"] for c in cells}:
        mine = [c for c in cells if c["dataset"] == dataset]
        best = max(c["accuracy"] for c in mine)
        for c in mine:
            c["ratio"] = round(c["accuracy"] / best, 3) if best else 0.0


def failures(cells: list[dict]) -> list[str]:
    """Base cells under TARGET x the best cell where the target applies, in words."""
    return [
        f"{c['dataset']}-{c['model']}-{c['hparams']}: accuracy {c['accuracy']:.3f}, "
        f"{c['ratio']:.2f} x the best"
        for c in cells
        if c["hparams"] == "base" and c["ratio"] < TARGET and DATASETS[c["dataset"]][3]
    ]


def run(
    work: Path,
    datasets: list[str],
    model_names: list[str],
    sets: list[str],
    params_file: Path = PARAMS,
) -> list[dict]:
    """Every cell on every dataset; return the cells with their ratios."""
    cells = []
    for name in datasets:
        shards_dir = prepare(work, name)
        for hparams in sets:
            for model in model_names:
                out = work / "runs" / f"{name}-{model}-{hparams}"
                size = DATASETS[name][2]
                cells.append(run_cell(shards_dir, model, hparams, size, out, params_file))
                c = cells[-1]
                print(
                    f"  {name}-{model}-{hparams}: accuracy {c['accuracy']:.3f} "
                    f"({c['epochs']} epochs, {c['seconds']:.0f} s)",
                    flush=True,
                )
    add_ratios(cells)
    return cells


def markdown(cells: list[dict]) -> str:
    lines = [
        "| dataset | model | hparams | accuracy | x best | epochs (best) | flags |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for c in cells:
        flags = ", ".join(
            f for f, on in (("collapsed", c["collapsed"]), ("chance", not c["above_chance"])) if on
        )
        lines.append(
            f"| {c['dataset']} | {c['model']} | {c['hparams']} | {c['accuracy']:.3f} | "
            f"{c['ratio']:.2f} | {c['epochs']} ({c['best_epoch']}) | {flags or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    # here, not at import: tests import this module, and their stage subprocesses show bars
    os.environ.setdefault("TQDM_DISABLE", "1")  # the shard stage's progress bars
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import models

    parser = common.parser("zoo", __doc__)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=models.available())
    parser.add_argument("--hparams", nargs="+", default=["quick", "base"])
    parser.add_argument("--params", type=Path, default=PARAMS, help="params.yaml to train with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        cells = run(Path(tmp), args.datasets, args.models, args.hparams, args.params)
    results = RESULTS.with_stem(f"zoo-{args.params.stem}") if args.params != PARAMS else RESULTS
    results.parent.mkdir(exist_ok=True)
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "params": str(args.params),
        "cells": cells,
        "below_target": failures(cells),
    }
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(cells))
    for line in report["below_target"]:
        print(f"below target ({TARGET} x the best): {line}")


if __name__ == "__main__":
    main()
