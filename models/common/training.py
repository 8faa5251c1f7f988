"""Shared training loop: nothing here knows which architecture it trains (cf. minGPT trainer).

Provides `fit(model, train_ds, val_ds, params, live, out_dir)` with early stopping, a best
checkpoint, TensorBoard logs and per-epoch dvclive metrics named `split/metric`.
"""

import os
import time
import warnings
from pathlib import Path

import keras

from data_processing.core import progress
from models.common import canonical
from models.common.devices import save_float32
from models.common.precise_bn import PreciseBatchNorm
from models.common.spec import HParams, TrainParams


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TF, and make TF ops deterministic."""
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class LiveLogger(keras.callbacks.Callback):
    """Log Keras epoch logs to dvclive as train/<metric> and val/<metric>, one step per epoch."""

    def __init__(self, live) -> None:
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            if key != "learning_rate":
                self.live.log_metric(name, float(value))
        self.live.next_step()


def keras_name(metric: str) -> str:
    """Map our `val/loss` naming to Keras's `val_loss`."""
    split, _, name = metric.partition("/")
    return f"val_{name}" if split == "val" else name


def optimizer(hparams: HParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Build the optimizer and learning-rate schedule a hyperparameter set names."""
    rate = hparams.learning_rate
    if hparams.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, hparams.epochs * steps_per_epoch)
    if hparams.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=hparams.weight_decay)
    if hparams.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, weight_decay=hparams.weight_decay or None)
    return keras.optimizers.Adam(rate)


class EpochBar(keras.callbacks.Callback):
    """The epochs as one progress bar (data_processing/core/progress.py): on a terminal a bar
    with the last validation scores, in a log a few plain lines; Keras' own per-epoch lines
    go to logs/epochs.csv instead of the terminal."""

    def __init__(self, desc: str, epochs: int) -> None:
        super().__init__()
        self.desc, self.epochs, self.bar = desc, epochs, None

    def on_train_begin(self, logs=None) -> None:
        self.bar = progress.bar(self.epochs, self.desc, unit="epochs")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        shown = {k: v for k, v in (logs or {}).items() if k.startswith("val_")}
        self.bar.set_postfix_str(", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        self.bar.update()

    def on_train_end(self, logs=None) -> None:
        self.bar.close()


def _callbacks(params: TrainParams, monitor: str, mode: str, out_dir, logs_dir, live) -> list:
    """Early stopping on the best weights, the best checkpoint, TensorBoard, dvclive and the
    per-epoch log (logs/epochs.csv)."""
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=params.early_stopping.patience,
            restore_best_weights=True,
        ),
        keras.callbacks.ModelCheckpoint(
            out_dir / "model.keras", monitor=monitor, mode=mode, save_best_only=True
        ),
        keras.callbacks.TensorBoard(log_dir=str(logs_dir / "tensorboard"), write_graph=False),
        keras.callbacks.CSVLogger(str(logs_dir / "epochs.csv")),
        LiveLogger(live),
    ]


def fit(
    model: keras.Model,
    train_ds,
    val_ds,
    params: TrainParams,
    hparams: HParams,
    live,
    out_dir: Path,
    loss: str,
    bn_images=None,
    logs_dir: Path | None = None,
) -> dict:
    """Compile and train; keep the best checkpoint at out_dir/model.keras.

    `model` is uncompiled (an architecture's `build`); train_ds and val_ds are batched
    tf.data datasets of (uint8 images, targets); `live` an open dvclive.Live; out_dir gets
    model.keras (canonical bytes: common/canonical.py), logs_dir tensorboard/. bn_images,
    when given, re-estimate BatchNorm statistics before each validation
    (models/common/precise_bn.py). For several devices or mixed precision, build and fit
    under models/common/devices.py's strategy and dtype policy.

    Returns:
        {"history": {keras metric: [per epoch]}, "seconds": float, "best_epoch": int}
    """
    steps = int(train_ds.cardinality())  # Shards.dataset states it
    # XLA is slower on CPU (bench/README.md)
    model.compile(optimizer(hparams, steps), loss=loss, metrics=["accuracy"], jit_compile=False)
    monitor = keras_name(params.early_stopping.monitor)
    mode = "min" if monitor.endswith("loss") else "max"
    logs_dir = logs_dir or out_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    callbacks = _callbacks(params, monitor, mode, out_dir, logs_dir, live)
    callbacks.append(EpochBar(f"train {logs_dir.parent.name}", hparams.epochs))
    if bn_images is not None:  # first: statistics are fixed before validation sees them
        batch = max(hparams.batch_size, 256)  # larger batches: cheaper (bench/README.md)
        callbacks.insert(0, PreciseBatchNorm(bn_images, batch, steps))
    start = time.perf_counter()
    # One iterator over the repeated epochs (the same batches, in the same order): the
    # streaming reader then fills the next epoch's shuffle buffer during this epoch's last
    # steps, instead of stalling every epoch's first step on it (bench/train_input.py).
    with warnings.catch_warnings():  # the dataset is shuffled by the shard reader already
        warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
        history = model.fit(
            train_ds.repeat(),
            steps_per_epoch=steps,
            validation_data=val_ds,
            epochs=hparams.epochs,
            callbacks=callbacks,
            verbose=0,  # EpochBar and logs/epochs.csv instead
        )
    seconds = time.perf_counter() - start
    save_float32(model, out_dir / "model.keras")  # a mixed-precision model's checkpoint
    canonical.keras_file(out_dir / "model.keras")  # no save time in it: the same model, same bytes
    scores = history.history[monitor]
    best = scores.index(min(scores) if mode == "min" else max(scores))
    return {"history": history.history, "seconds": seconds, "best_epoch": best + 1}
