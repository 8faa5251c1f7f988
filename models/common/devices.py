"""Where training runs: one device, or data-parallel over several GPUs on one machine.

`strategy(params)` picks a tf.distribute.MirroredStrategy (one model copy per device; each step
splits the global batch across them and all-reduces the gradients) or the default strategy.
Build and compile the model inside `strategy.scope()`, and batch the datasets by the global
batch `scaled()` returns. `precision()` names the Keras dtype policy train.mixed_precision asks
for; build the model under `dtype_policy()` of it.

Multi-host training (MultiWorkerMirroredStrategy) is out of scope: Keras 3 on TensorFlow does not
support it (keras-team/keras#20585).
"""

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from data_processing.core.errors import DataError
from data_processing.core.params import PARAMS_FILE
from models.common.spec import HParams, TrainParams


def strategy(params: TrainParams) -> tf.distribute.Strategy:
    """The strategy train.devices asks for.

    "auto": MirroredStrategy over every visible GPU when there are 2 or more, else the default
    strategy (one device: the GPU, or the CPU). An int N >= 2: MirroredStrategy over the first N
    GPUs or, on a machine without GPUs, the first N logical CPUs (tests split the CPU in two
    with tf.config.set_logical_device_configuration); 1: the default strategy.

    Raises:
        DataError: naming train.devices, when N is more than the devices there are.
    """
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if params.devices == "auto" and len(gpus) >= 2:
        return tf.distribute.MirroredStrategy(gpus)
    if params.devices in ("auto", 1):
        return tf.distribute.get_strategy()
    pool = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    kind = "GPU" if gpus else "logical CPU"
    if len(pool) < params.devices:
        raise DataError(
            PARAMS_FILE,
            f"at most {len(pool)} devices (the visible {kind}s)",
            field="train.devices",
            found=str(params.devices),
            hint="'auto' uses every visible GPU",
        )
    return tf.distribute.MirroredStrategy(pool[: params.devices])


def scaled(hparams: HParams, params: TrainParams, replicas: int) -> HParams:
    """`hparams` with the global batch size and learning rate for `replicas` model copies.

    With train.scale_batch the global batch grows `replicas` times (each replica keeps
    batch_size), else it stays batch_size (split across the replicas). The learning rate grows
    by that factor (train.scale_learning_rate "linear": Goyal et al. 2017, "Accurate, Large
    Minibatch SGD"), by its square root ("sqrt"), or not at all ("none").
    """
    growth = replicas if params.scale_batch else 1
    factor = {"linear": growth, "sqrt": math.sqrt(growth), "none": 1}[params.scale_learning_rate]
    return hparams.model_copy(
        update={
            "batch_size": hparams.batch_size * growth,
            "learning_rate": hparams.learning_rate * factor,
        }
    )


def summary(strategy: tf.distribute.Strategy, hparams: HParams, policy: str) -> dict:
    """What a run used, for train.json and the dvclive params: the strategy, its replicas and
    devices, the global batch size and learning rate (`scaled` hparams) and the dtype policy."""
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    return {
        "strategy": "MirroredStrategy" if mirrored else "default",
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices) if mirrored else [],
        "batch_size": hparams.batch_size,
        "learning_rate": hparams.learning_rate,
        "precision": policy,
    }


def describe(record: dict) -> str:
    """One line for the stage's output from a `summary` record."""
    return (
        f"{record['strategy']} strategy over {record['replicas']} replica(s), global batch "
        f"{record['batch_size']}, learning rate {record['learning_rate']:g}, "
        f"{record['precision']}"
    )


def precision(params: TrainParams) -> str:
    """The Keras dtype policy: float32, or with train.mixed_precision mixed_float16 where
    there is a GPU and mixed_bfloat16 where there is none (CPUs have no fast float16)."""
    if not params.mixed_precision:
        return "float32"
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under the Keras dtype policy `name`; restore the previous one after.

    Under a mixed policy layers compute in float16/bfloat16 and keep float32 weights; the
    shared head (models/common/layers.py `head`) stays float32 so the probabilities are
    float32, and compile() wraps the optimizer in a LossScaleOptimizer for float16.
    """
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def save_float32(model: keras.Model, checkpoint: Path) -> None:
    """When `model` computes in mixed precision, replace its saved `checkpoint` by the float32
    copy (`float32_copy`) of it, uncompiled; else leave it as it is."""
    if model.dtype_policy.name != "float32":
        float32_copy(keras.saving.load_model(checkpoint, compile=False)).save(checkpoint)


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model and weights with every layer computing in float32 (uncompiled).

    A mixed-precision model is trained as such, but saved as this copy: evaluation, the ONNX
    export and its 1e-5 check against TensorFlow, and serving then run float32 as for any
    other model. The weights are float32 under a mixed policy too, so they copy exactly.
    """
    config = _float32_config(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _float32_config(config: object) -> object:
    """A serialized Keras object with mixed dtype policies and half-float dtypes as float32."""
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy" and config["config"]["name"].startswith("mixed_"):
        return {**config, "config": {**config["config"], "name": "float32"}}
    return {
        key: "float32"
        if key == "dtype" and value in ("float16", "bfloat16")
        else _float32_config(value)
        for key, value in config.items()
    }
