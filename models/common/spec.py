"""What every architecture is told about its data, and the shared train params."""

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from data_processing.core.params import Params


@dataclass(frozen=True)
class ModelSpec:
    channels: int  # 1 (grayscale) or 3 (RGB); inputs are uint8 [N, H, W, channels] of any H, W
    num_classes: int
    image_size: tuple[int, int]  # (height, width) the graph resizes every input to
    label_mode: str = "single"  # "single": softmax; "multi": sigmoid
    standardize: bool = True  # per-image zero mean, unit variance (train.standardize)


class Augment(Params):
    """Training-only augmentation, the `augment:` sub-section of a model's params; 0/none = off."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotate: float = Field(default=0.0, ge=0.0, le=0.5)  # max rotation, fraction of a full turn
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0)  # max zoom in/out, fraction of the size
    contrast: float = Field(default=0.0, ge=0.0, lt=1.0)  # max contrast change, fraction


class EarlyStopping(Params):
    monitor: str = "val/loss"
    patience: int = 8


class TrainParams(Params):
    """The `train` section: what every hyperparameter set shares."""

    image_size: list[int] = Field(default=[28, 28], min_length=2, max_length=2)  # (h, w)
    val_fraction: float = 0.15
    shuffle_buffer: int = Field(default=4096, ge=1)  # images; memory = this x record bytes
    cache_mb: int = Field(default=256, ge=0)  # a split at most this size is read once, then held
    early_stopping: EarlyStopping = EarlyStopping()
    standardize: bool = True  # each image to zero mean, unit variance in the graph; false: /255
    precise_bn_images: int = Field(default=1024, ge=0)  # re-estimate BatchNorm stats; 0: off
    # Where training runs (models/common/devices.py): "auto" mirrors over every visible GPU when
    # there are 2+; an int N mirrors over N GPUs (N logical CPUs when there is no GPU); 1: one.
    devices: Literal["auto"] | int = "auto"
    scale_batch: bool = True  # global batch = batch_size x replicas (each replica: batch_size)
    # the learning rate x the factor the global batch grew by (linear), its square root, or not
    scale_learning_rate: Literal["linear", "sqrt", "none"] = "linear"
    mixed_precision: bool = False  # float16 (bfloat16 without GPU) compute, float32 weights

    @field_validator("devices", mode="before")
    @classmethod
    def _auto_or_a_count(cls, value: object) -> object:
        if value == "auto" or (type(value) is int and value >= 1):  # not True, 2.0 or 0
            return value
        raise PydanticCustomError("devices", "'auto' or a number of devices (an integer >= 1)")


class HParams(Params):
    """One named set of the `hparams` section (a matrix dimension, like datasets and models)."""

    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 0.001
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0  # adamw and sgd only
    schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 0 over all epochs

    @model_validator(mode="after")
    def _decay_needs_a_decaying_optimizer(self) -> "HParams":
        # Keras's Adam has no decoupled decay: refuse rather than drop the value silently.
        if self.optimizer == "adam" and self.weight_decay:
            raise ValueError(
                f"weight_decay {self.weight_decay} needs optimizer adamw or sgd (adam ignores it)"
            )
        return self
