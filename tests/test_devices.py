"""Training on several devices and in mixed precision (models/common/devices.py): the strategy
`train.devices` picks, the global batch and learning rate it scales, the float32 head and
saved model, and the params that ask for them.

This machine has no GPU: the real train stage runs in a fresh interpreter whose CPU is split
into two logical devices, so `train.devices: 2` mirrors over them as it would over two GPUs.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import ROOT, edit_params, run_stage, write_seed_dataset
from dvclive import Live

import models
from data_processing.core.errors import DataError
from data_processing.core.params import parse_params
from models.common import devices, training
from models.common.onnx_export import export_onnx
from models.common.spec import HParams, ModelSpec, TrainParams

# `python -m models.train ARGS` with the CPU split into two logical devices first (TF allows
# that only before it initializes, hence a fresh interpreter; -P: the project's models/runs
# folder in the cwd must not shadow the installed package)
TWO_CPUS = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = ["models.train", *sys.argv[1:]]
runpy.run_module("models.train", run_name="__main__", alter_sys=True)
"""


def train_params(**values) -> TrainParams:
    return parse_params(values, TrainParams, "train")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a tiny 3-class dataset (16 train images a class) sharded at 8x8."""
    project = tmp_path_factory.mktemp("devices")
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_seed_dataset(project / "datasets/raw/tiny", {"train": 16, "test": 4})
    edit_params(project / "params.yaml", datasets=["tiny"], train={"image_size": [8, 8]})
    raw, norm = "datasets/raw/tiny", "datasets/normalized/tiny"
    for module, *args in (
        ("data_processing.normalize", raw, norm),
        ("data_processing.shard", raw, norm, "datasets/shards/tiny"),
    ):
        proc = run_stage(module, *args, cwd=project)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return project


@pytest.mark.train
@pytest.mark.parametrize(
    "mixed, scale_lr, lr_factor", [(False, "linear", 2.0), (True, "sqrt", math.sqrt(2))]
)
def test_two_devices_train_data_parallel(
    sharded: Path, mixed: bool, scale_lr: str, lr_factor: float
) -> None:
    edit_params(
        sharded / "params.yaml",
        train={"devices": 2, "scale_learning_rate": scale_lr, "mixed_precision": mixed},
        hparams={"quick": {"epochs": 3, "batch_size": 8, "learning_rate": 0.003}},
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", TWO_CPUS, "tiny", "mlp", "quick"],
        cwd=sharded,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    precision = "mixed_bfloat16" if mixed else "float32"  # no GPU: bfloat16
    line = "MirroredStrategy strategy over 2 replica(s), global batch 16, learning rate"
    assert line in proc.stdout and precision in proc.stdout  # the one line it logs
    out = sharded / "models/runs/tiny-mlp-quick/train"
    summary = json.loads((out / "train.json").read_text())
    run = summary["distribution"]
    assert run["strategy"] == "MirroredStrategy" and run["replicas"] == 2
    assert [d.rsplit("/", 1)[1] for d in run["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert run["batch_size"] == 16  # 8 per replica, 2 replicas (scale_batch: true)
    assert run["learning_rate"] == pytest.approx(0.003 * lr_factor)
    assert run["precision"] == precision
    logs = out.parent / "logs"  # dvclive writes beside the locked train/ output
    logged = yaml.safe_load((logs / "live/params.yaml").read_text())  # dvclive's params
    assert logged["distribution"] == run and logged["hparams"]["batch_size"] == 8
    history = summary["history"]
    assert all(math.isfinite(v) for v in history["loss"] + history["val_loss"])
    assert min(history["loss"][1:]) < history["loss"][0]  # it learns
    assert max(history["val_accuracy"]) > 1 / 3  # above chance (3 classes)
    epochs = (logs / "epochs.csv").read_text().splitlines()  # Keras's lines, off the terminal
    assert epochs[0].startswith("epoch,") and len(epochs) == 1 + 3 == 1 + len(history["loss"])
    saved = keras.saving.load_model(out / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 grayscale images whose class (of 3) is their brightness band, and the classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.integers(0, 50, (n, 16, 16, 1)) + 90 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def _data(n: int, seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(_images(n, seed)).batch(16)


def test_mixed_precision_computes_in_half_and_keeps_a_float32_head(tmp_path: Path) -> None:
    params = train_params(mixed_precision=True, early_stopping={"patience": 4})
    hparams = parse_params({"epochs": 2, "learning_rate": 0.01}, HParams, "hparams.test")
    policy = devices.precision(params)
    assert policy == "mixed_bfloat16"  # no GPU here; mixed_float16 on one
    spec = ModelSpec(channels=1, num_classes=3, image_size=(16, 16), standardize=False)
    arch = models.get("cnn")
    training.seed_everything(0)
    with devices.strategy(params).scope(), devices.dtype_policy(policy):
        model = arch.build(spec, arch.Params(filters=[8], dropout=0.0))
        with Live(str(tmp_path / "live"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            training.fit(
                model, _data(96, 0), _data(32, 1), params, hparams, live, tmp_path,
                "sparse_categorical_crossentropy",
            )  # fmt: skip
    assert keras.config.dtype_policy().name == "float32"  # restored after
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert model.get_layer("scores").compute_dtype == "float32"
    images = _images(32, 2)[0]
    mixed = model.predict(images, verbose=0)
    assert mixed.dtype == np.float32 and np.isfinite(mixed).all()
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
    # model.keras is the float32 copy: what evaluate, the ONNX export and serving run
    saved = keras.saving.load_model(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    probs = saved.predict(images, verbose=0)
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, mixed, atol=0.05)  # bfloat16 keeps ~3 digits
    record = export_onnx(saved, tmp_path / "model.onnx", images)
    assert record["tolerance_used"] <= 1.0 and record["label_agreement"] == 1.0


def test_batch_and_learning_rate_scale_as_params_say() -> None:
    hparams = parse_params({"batch_size": 32, "learning_rate": 0.01}, HParams, "hparams.test")
    cases = [
        ({}, 4, 128, 0.04),  # defaults: scale_batch true, linear
        ({"scale_learning_rate": "sqrt"}, 4, 128, 0.02),
        ({"scale_learning_rate": "none"}, 4, 128, 0.01),
        ({"scale_batch": False}, 4, 32, 0.01),  # the global batch did not grow: nor does the rate
        ({}, 1, 32, 0.01),
    ]
    for values, replicas, batch, rate in cases:
        run = devices.scaled(hparams, train_params(**values), replicas)
        assert (run.batch_size, run.learning_rate) == (batch, pytest.approx(rate)), values
        assert (run.epochs, run.optimizer) == (hparams.epochs, hparams.optimizer)
    one = devices.strategy(train_params())  # auto, no GPU here: the default strategy
    assert one.num_replicas_in_sync == 1
    assert devices.summary(one, hparams, "float32")["strategy"] == "default"


@pytest.mark.parametrize(
    "values, field, expected",
    [
        ({"devices": 0}, "train.devices", "'auto' or a number of devices (an integer >= 1)"),
        ({"devices": "all"}, "train.devices", "'auto' or a number of devices"),
        ({"devices": True}, "train.devices", "'auto' or a number of devices"),
        ({"devices": 2.0}, "train.devices", "'auto' or a number of devices"),
        ({"scale_batch": "yes"}, "train.scale_batch", "a valid boolean"),
        ({"scale_learning_rate": "cubic"}, "train.scale_learning_rate", "'linear', 'sqrt' or"),
        ({"mixed_precision": "fp16"}, "train.mixed_precision", "a valid boolean"),
    ],
)
def test_bad_device_params_name_the_field(values: dict, field: str, expected: str) -> None:
    with pytest.raises(DataError) as err:
        train_params(**values)
    message = str(err.value)
    assert "params.yaml" in message and f"field {field!r}" in message and expected in message
    assert repr(next(iter(values.values()))) in message  # what was found


def test_more_devices_than_there_are_is_refused() -> None:
    with pytest.raises(DataError) as err:
        devices.strategy(train_params(devices=64))
    message = str(err.value)
    assert "field 'train.devices'" in message and "found 64" in message
    assert "logical CPU" in message  # no GPU here: it counted CPUs
