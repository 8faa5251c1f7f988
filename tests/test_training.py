"""The shared training loop: every optimizer and schedule a hyperparameter set can name, and
early stopping that ends on the best epoch's weights."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_processing.core.errors import DataError
from data_processing.core.params import parse_params
from models.common import training
from models.common.spec import HParams, TrainParams

STEPS = 10  # steps per epoch


def hparams(**values) -> HParams:
    return parse_params({"epochs": 4, **values}, HParams, "hparams.test")


@pytest.mark.parametrize(
    "name, cls, decay",
    [("adam", keras.optimizers.Adam, None), ("adamw", keras.optimizers.AdamW, 0.01)],
)
def test_adam_and_adamw(name: str, cls: type, decay: float | None) -> None:
    opt = training.optimizer(hparams(optimizer=name, weight_decay=decay or 0.0), STEPS)
    assert type(opt) is cls
    assert float(opt.learning_rate) == pytest.approx(0.001)
    assert opt.weight_decay == decay


def test_sgd_has_momentum_and_its_weight_decay() -> None:
    opt = training.optimizer(hparams(optimizer="sgd", weight_decay=0.0005), STEPS)
    assert type(opt) is keras.optimizers.SGD
    assert (opt.momentum, opt.weight_decay) == (0.9, 0.0005)
    plain = training.optimizer(hparams(optimizer="sgd"), STEPS)
    assert plain.weight_decay is None  # 0.0: no decay term at all


def test_cosine_decays_to_zero_over_every_step() -> None:
    opt = training.optimizer(hparams(schedule="cosine", learning_rate=0.01), STEPS)
    schedule = opt._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    rates = [float(schedule(step)) for step in (0, 20, 40)]  # 4 epochs x 10 steps
    assert rates[0] == pytest.approx(0.01) and rates[1] == pytest.approx(0.005)
    assert rates[2] == pytest.approx(0.0, abs=1e-9)
    constant = training.optimizer(hparams(learning_rate=0.01), STEPS)
    assert float(constant.learning_rate) == pytest.approx(0.01)


def test_weight_decay_under_adam_is_refused_not_dropped() -> None:
    with pytest.raises(DataError) as err:
        hparams(optimizer="adam", weight_decay=0.01)
    message = str(err.value)
    assert "params.yaml" in message and "hparams.test" in message
    assert "adamw" in message  # the fix


def _data(rng: np.random.Generator, n: int, shuffle_labels: bool) -> tf.data.Dataset:
    """8x8 images whose class is their brightness; validation labels shuffled, so the
    validation loss gets worse as the model fits the training set."""
    y = rng.integers(0, 2, n)
    x = (rng.integers(0, 60, (n, 8, 8, 1)) + 150 * y[:, None, None, None]).astype(np.uint8)
    if shuffle_labels:
        y = rng.permutation(y)
    targets = keras.utils.to_categorical(y, 2)
    return tf.data.Dataset.from_tensor_slices((x, targets)).batch(16)


def test_early_stopping_ends_on_the_best_epochs_weights(tmp_path: Path) -> None:
    training.seed_everything(0)
    rng = np.random.default_rng(0)
    train_ds, val_ds = _data(rng, 160, False), _data(rng, 64, True)
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    stopping = {"monitor": "val/loss", "patience": 2}
    params = parse_params({"early_stopping": stopping}, TrainParams, "train")

    class Live:  # dvclive's two calls the logger makes
        def log_metric(self, name, value):
            pass

        def next_step(self):
            pass

    result = training.fit(
        model,
        train_ds,
        val_ds,
        params,
        hparams(epochs=30, learning_rate=0.01),
        Live(),
        tmp_path,
        "categorical_crossentropy",
    )
    val_loss = result["history"]["val_loss"]
    best = int(np.argmin(val_loss)) + 1
    assert result["best_epoch"] == best
    assert len(val_loss) == best + 2 < 30  # stopped `patience` epochs after the best
    restored = model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(val_loss[best - 1], abs=1e-5)  # the best weights
    checkpoint = keras.saving.load_model(tmp_path / "model.keras")
    for a, b in zip(model.get_weights(), checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    json.dumps(result["history"])  # plain floats: train.json writes it
