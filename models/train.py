"""Train one cell (dataset x model) from the dataset's shards; keep the best checkpoint.

Reads datasets/shards/<dataset>/ (train records, streamed) and params `base`, `train`,
`hparams.<set>` and `models.<model>`.
Writes models/runs/<cell>/train/ (model.keras, train.json) and the per-epoch curves
models/plots/{loss,accuracy}/<cell>.tsv; and models/runs/<cell>/logs/ (live/ from dvclive,
tensorboard/, timing.json), which carry wall-clock times and so are not DVC outputs.
Several GPUs train data-parallel, and mixed precision is a switch (train.devices etc.,
models/common/devices.py).

Run: python -m models.train digits cnn base
"""

import json
import shutil
from pathlib import Path

import numpy as np

import models
from data_processing.core import cli, progress
from data_processing.core.errors import DataError, exit_on_error
from data_processing.core.io import staged_dir, write_text
from data_processing.core.params import PARAMS_FILE, BaseParams, load_params
from models.common.data import Shards, split_train_val
from models.common.paths import Cell
from models.common.spec import HParams, ModelSpec, TrainParams


def train(
    cell: Cell, params: TrainParams, hparams: HParams, arch_params, seed: int, out_dir: Path
) -> dict:
    """Train `cell` into out_dir (its logs into cell.logs); return the train summary written
    to train.json, and the timing under "timing"."""
    from dvclive import Live

    from models.common import devices, precise_bn  # import keras: not before --help is parsed
    from models.common.training import fit, seed_everything

    seed_everything(seed)
    shards = Shards.open(cell.shards)
    val = split_train_val(shards, params.val_fraction, seed)
    spec = ModelSpec(
        channels=shards.channels,
        num_classes=len(shards.categories),
        image_size=tuple(params.image_size),
        label_mode=shards.label_mode,
        standardize=params.standardize,
    )
    strategy, policy = devices.strategy(params), devices.precision(params)
    run = devices.scaled(hparams, params, strategy.num_replicas_in_sync)  # the global batch
    distribution = devices.summary(strategy, run, policy)
    say = print if distribution["replicas"] > 1 or policy != "float32" else progress.say
    say(f"train: {cell.name}: {devices.describe(distribution)}")  # not the default: logged
    cache, single = params.cache_mb << 20, spec.label_mode == "single"
    loss = "sparse_categorical_crossentropy" if single else "binary_crossentropy"
    with strategy.scope(), devices.dtype_policy(policy):  # variables, compile and fit
        model = models.get(cell.model).build(spec, arch_params)
        bn_images = None  # only models with BatchNorm need them
        if params.precise_bn_images and precise_bn.trainable_batch_norms(model):
            sample = precise_bn.sample(np.flatnonzero(~val), params.precise_bn_images, seed)
            bn_images = shards.images("train", sample)
        with Live(str(cell.logs / "live"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            live.log_params(
                {
                    "cell": cell.name,
                    "seed": seed,
                    "train": params.model_dump(mode="json"),
                    "hparams": hparams.model_dump(mode="json"),
                    "arch": arch_params.model_dump(mode="json"),
                    "distribution": distribution,
                }
            )
            result = fit(
                model,
                shards.dataset(
                    "train", run.batch_size, ~val, seed, params.shuffle_buffer, cache_bytes=cache
                ),
                shards.dataset("train", run.batch_size, val, cache_bytes=cache),
                params,
                run,
                live,
                out_dir,
                loss,
                bn_images,
                cell.logs,
            )
    return summary(result, val, spec, shards) | {"distribution": distribution}


def summary(result: dict, val: np.ndarray, spec: ModelSpec, shards: Shards) -> dict:
    """train.json: epochs, the split sizes, the model spec, classes and history; its timing
    under "timing" (written to logs/timing.json, not train.json: no run would repeat it)."""
    epochs, n_train = len(result["history"]["loss"]), int((~val).sum())
    timing = {
        "seconds": round(result["seconds"], 3),
        "images_per_second": round(n_train * epochs / result["seconds"], 1),
    }
    return {
        "timing": timing,
        "epochs": epochs,
        "best_epoch": result["best_epoch"],
        "train_images": n_train,
        "val_images": int(val.sum()),
        "spec": {
            "channels": spec.channels,
            "num_classes": spec.num_classes,
            "image_size": list(spec.image_size),
            "input_size": list(shards.image_size),  # what `prepare` resizes every image to
            "label_mode": spec.label_mode,
        },
        "categories": shards.categories,
        "history": result["history"],
    }


def curves_tsv(history: dict, metric: str) -> str:
    """Return `epoch, train, val` rows for one metric (the dvc plots data)."""
    rows = ["epoch\ttrain\tval"]
    pairs = zip(history[metric], history[f"val_{metric}"], strict=True)
    for epoch, (tr, va) in enumerate(pairs, start=1):
        rows.append(f"{epoch}\t{tr:.6f}\t{va:.6f}")
    return "\n".join(rows) + "\n"


@exit_on_error
def main() -> None:
    cell = Cell(*cli.parse(__doc__, *cli.CELL))
    if cell.model not in models.available():
        raise DataError(
            PARAMS_FILE,
            f"a model from models/architectures/: {models.available()}",
            field=f"models.{cell.model}",
            found=repr(cell.model),
        )
    arch_params = load_params(f"models.{cell.model}", models.get(cell.model).Params)
    hparams = load_params(f"hparams.{cell.hparams}", HParams)
    params, seed = load_params("train", TrainParams), load_params("base", BaseParams).seed
    shutil.rmtree(cell.logs, ignore_errors=True)  # this run's logs only
    with staged_dir(cell.train_dir) as out_dir:
        summary = train(cell, params, hparams, arch_params, seed, out_dir)
        timing = summary.pop("timing")
        write_text(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    write_text(cell.logs / "timing.json", json.dumps(timing, indent=2) + "\n")
    for metric in ("loss", "accuracy"):
        write_text(cell.plot(metric, "tsv"), curves_tsv(summary["history"], metric))
    print(
        f"train: {cell.name}: {summary['epochs']} epochs in {timing['seconds']:.1f}s, "
        f"best epoch {summary['best_epoch']} -> {cell.train_dir}"
    )


if __name__ == "__main__":
    main()
