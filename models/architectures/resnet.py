"""Small ResNet: a 3x3 stem, then stages of residual blocks (conv-BN-relu-conv-BN + shortcut).

A stage's first block may stride (default: every stage halves h, w: 28 -> 14, 7, 4); a 1x1
projection shortcut matches shapes wherever a block changes them. padding="same" throughout,
so sizes go n -> ceil(n/2) and never reach zero (8x8 -> 4, 2, 1).
"""

import keras
from pydantic import Field, model_validator

from data_processing.core import params as p
from models.common.layers import batch_norm, head, inputs
from models.common.spec import Augment, ModelSpec


class Params(p.Params):  # the `models.resnet` section of params.yaml
    filters: list[int] = Field(default=[16, 32, 64], min_length=1)  # filters per stage
    strides: list[int] = [2, 2, 2]  # stride of each stage's first block
    blocks: int = Field(default=1, ge=1)  # residual blocks per stage
    dropout: float = 0.0  # before the head
    augment: Augment = Augment()

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if len(self.filters) != len(self.strides):
            raise ValueError("filters and strides need one entry per stage")
        return self


def _block(x: keras.KerasTensor, filters: int, stride: int) -> keras.KerasTensor:
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
    y = keras.layers.ReLU()(batch_norm()(y))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = batch_norm()(y)
    if stride != 1 or x.shape[-1] != filters:  # projection shortcut
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False)(x)
        shortcut = batch_norm()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec, params.augment)
    x = keras.layers.Conv2D(params.filters[0], 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(batch_norm()(x))
    for filters, stride in zip(params.filters, params.strides, strict=True):
        for i in range(params.blocks):
            x = _block(x, filters, stride if i == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(params.dropout)(x) if params.dropout else x
    return keras.Model(raw, head(x, spec), name="resnet")
