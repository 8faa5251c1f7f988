"""MLP baseline from the seed: Flatten-Dense128-Dense128-softmax (118,282 params at 28x28x1)."""

import keras

from data_processing import params as p
from models.common.layers import head, inputs
from models.common.spec import ModelSpec


class Params(p.Params):  # the `models.mlp` section of params.yaml
    units: list[int] = [128, 128]
    dropout: float = 0.0


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec)
    x = keras.layers.Flatten()(x)
    for units in params.units:
        x = keras.layers.Dense(units, activation="relu")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(raw, head(x, spec), name="mlp")
