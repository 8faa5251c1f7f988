"""CNN from the seed: conv32-pool-conv64-pool-flatten-dropout-dense (34,826 params at 28x28x1)."""

import keras

from data_processing.core import params as p
from models.common.layers import head, inputs
from models.common.spec import ModelSpec


class Params(p.Params):  # the `models.cnn` section of params.yaml
    filters: list[int] = [32, 64]
    kernel_size: int = 3
    dropout: float = 0.5


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec)
    for filters in params.filters:
        x = keras.layers.Conv2D(filters, params.kernel_size, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(raw, head(x, spec), name="cnn")
