"""MobileNetV2-style net: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 linear project).

The feature extractor is a sub-model named `backbone` (no head), so it can start from a local
weights file saved from a model we trained (models/common/transfer.py; nothing is downloaded)
while the head is always new, sized for this dataset's classes.
"""

import keras
from pydantic import Field, model_validator

from data_processing.core import params as p
from models.common.layers import batch_norm, head, inputs
from models.common.spec import Augment, ModelSpec
from models.common.transfer import BACKBONE, load_backbone


class Params(p.Params):  # the `models.mobilenet` section of params.yaml
    alpha: float = Field(default=1.0, gt=0)  # width multiplier on every filter count
    expansion: int = Field(default=2, ge=1)  # inverted-residual hidden width = expansion x input
    filters: list[int] = [16, 24, 32]  # output filters per stage (before alpha)
    repeats: list[int] = [1, 2, 2]  # blocks per stage
    strides: list[int] = [1, 2, 2]  # stride of each stage's first block (after the stem's 2)
    dropout: float = 0.2
    weights: str | None = None  # backbone .weights.h5 under datasets/pretrained/, or None
    freeze_base: bool = False  # True: train only the head (needs weights)
    augment: Augment = Augment()

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if not len(self.filters) == len(self.repeats) == len(self.strides):
            raise ValueError("filters, repeats and strides need one entry per stage")
        if self.freeze_base and self.weights is None:
            raise ValueError("freeze_base: true needs pretrained weights")
        return self


def _width(filters: int, alpha: float) -> int:
    return max(8, int(filters * alpha + 4) // 8 * 8)  # MobileNetV2 rounds to multiples of 8


def _block(x: keras.KerasTensor, filters: int, stride: int, expansion: int) -> keras.KerasTensor:
    shortcut, channels = x, x.shape[-1]
    if expansion > 1:
        x = keras.layers.Conv2D(channels * expansion, 1, use_bias=False)(x)
        x = keras.layers.ReLU(6.0)(batch_norm()(x))
    x = keras.layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU(6.0)(batch_norm()(x))
    x = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
    x = batch_norm()(x)  # linear bottleneck: no activation
    return keras.layers.Add()([shortcut, x]) if stride == 1 and channels == filters else x


def backbone(channels: int, params: Params) -> keras.Model:
    """Float [N, h, w, channels] from `inputs` -> pooled features [N, last filters]; any h, w."""
    image = keras.Input(shape=(None, None, channels), name="features_in")
    stem = keras.layers.Conv2D(_width(16, params.alpha), 3, 2, padding="same", use_bias=False)
    x = stem(image)  # stride 2, as in MobileNetV2: 28x28 -> 14x14
    x = keras.layers.ReLU(6.0)(batch_norm()(x))
    stages = zip(params.filters, params.repeats, params.strides, strict=True)
    for filters, repeats, stride in stages:
        for i in range(repeats):
            x = _block(x, _width(filters, params.alpha), stride if i == 0 else 1, params.expansion)
    return keras.Model(image, keras.layers.GlobalAveragePooling2D()(x), name=BACKBONE)


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec, params.augment)
    base = backbone(spec.channels, params)
    if params.weights is not None:
        load_backbone(base, params.weights)
    base.trainable = not params.freeze_base  # frozen BatchNorm also runs in inference mode
    x = base(x)
    x = keras.layers.Dropout(params.dropout)(x) if params.dropout else x
    return keras.Model(raw, head(x, spec), name="mobilenet")
