"""Small VGG: blocks of 3x3 convs then 2x2 max-pooling, flatten, a dense layer, dropout.

Pooling uses padding="same", so each block maps n -> ceil(n/2) and never reaches zero size.
"""

import keras
from pydantic import Field

from data_processing.core import params as p
from models.common.layers import head, inputs
from models.common.spec import Augment, ModelSpec


class Params(p.Params):  # the `models.vgg` section of params.yaml
    filters: list[int] = Field(default=[16, 32], min_length=1)  # conv filters per block
    convs: int = Field(default=2, ge=1)  # 3x3 convs per block
    units: int = 64  # dense layer after flatten; 0 = none
    dropout: float = 0.5  # after the dense layer
    augment: Augment = Augment()


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec, params.augment)
    for filters in params.filters:
        for _ in range(params.convs):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    if params.units:
        x = keras.layers.Dense(params.units, activation="relu")(x)
    x = keras.layers.Dropout(params.dropout)(x) if params.dropout else x
    return keras.Model(raw, head(x, spec), name="vgg")
