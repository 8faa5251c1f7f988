"""Graph-side preprocessing, so serving feeds raw uint8 images and cannot drift from training."""

import keras

from models.common.spec import ModelSpec


def inputs(spec: ModelSpec) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Return (raw uint8 input of any size, float32 [N, h, w, C] in 0..1 at spec.image_size)."""
    raw = keras.Input(shape=(None, None, spec.channels), dtype="uint8", name="image")
    x = keras.layers.Resizing(*spec.image_size, interpolation="bilinear", name="resize")(raw)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    return raw, x


def head(x: keras.KerasTensor, spec: ModelSpec) -> keras.KerasTensor:
    """Class scores: softmax for single-label data, sigmoid for multi-label."""
    activation = "softmax" if spec.label_mode == "single" else "sigmoid"
    return keras.layers.Dense(spec.num_classes, activation=activation, name="scores")(x)
