"""MLP baseline from the seed: Flatten, per hidden layer Dense-BatchNorm-ReLU-Dropout, softmax.

The seed's plain Dense128-Dense128 stayed at chance on a few hundred photos, even on its training
images; standardized inputs (models/common/layers.py), BatchNorm and dropout 0.5 brought it to
0.95 on generated grayscale photos and 1.00 on RGB textures (bench/zoo.py).
`batch_norm: false, dropout: 0.0` is the seed's model.
"""

import keras

from data_processing.core import params as p
from models.common.layers import batch_norm, head, inputs
from models.common.spec import ModelSpec


class Params(p.Params):  # the `models.mlp` section of params.yaml
    units: list[int] = [128, 128]
    batch_norm: bool = True  # after each hidden Dense, before its ReLU
    dropout: float = 0.5  # after each hidden layer; 0 = none


def build(spec: ModelSpec, params: Params) -> keras.Model:
    raw, x = inputs(spec)
    x = keras.layers.Flatten()(x)
    for units in params.units:
        if params.batch_norm:  # BatchNorm's beta replaces the Dense bias
            x = keras.layers.Dense(units, use_bias=False)(x)
            x = keras.layers.ReLU()(batch_norm()(x))
        else:
            x = keras.layers.Dense(units, activation="relu")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout)(x)
    return keras.Model(raw, head(x, spec), name="mlp")
