"""Graph-side preprocessing, so serving feeds raw uint8 images and cannot drift from training."""

import keras

from models.common.spec import Augment, ModelSpec


def inputs(
    spec: ModelSpec, augmentation: Augment | None = None
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Return (raw uint8 input of any size, float32 [N, h, w, C] at spec.image_size).

    `augmentation` (training only) runs on the 0..1 pixels. Then, with spec.standardize, each
    image goes to zero mean and unit variance over all its pixels and channels (as
    tf.image.per_image_standardization). Why: in photos the class is a contrast, while
    brightness, colour cast and exposure vary from picture to picture. Without it, on a few
    hundred photos, the MLP stayed at chance even on its training images and the CNN and VGG
    needed several times the epochs (bench/zoo.py).
    """
    raw = keras.Input(shape=(None, None, spec.channels), dtype="uint8", name="image")
    x = keras.layers.Resizing(*spec.image_size, interpolation="bilinear", name="resize")(raw)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = augment(x, augmentation) if augmentation is not None else x
    if spec.standardize:  # epsilon bounds a flat image's scale
        x = keras.layers.LayerNormalization(
            axis=[1, 2, 3], center=False, scale=False, epsilon=1e-3, name="standardize"
        )(x)
    return raw, x


def augment(x: keras.KerasTensor, params: Augment) -> keras.KerasTensor:
    """Random flip/rotate/zoom/contrast on 0..1 images (`inputs` calls it); 0/"none" = no layer.

    fit() runs them; predict(), evaluate(), model.export() and our serving code pass
    training=False, which makes them identity. Beware: these Keras 3 layers default to
    training=True, so a bare `model(x)` with augmentation on DOES augment; call
    `model(x, training=False)` for inference.
    """
    if params.flip != "none":
        x = keras.layers.RandomFlip(params.flip, name="augment_flip")(x)
    if params.rotate:
        x = keras.layers.RandomRotation(params.rotate, name="augment_rotate")(x)
    if params.zoom:
        x = keras.layers.RandomZoom(params.zoom, name="augment_zoom")(x)
    if params.contrast:
        x = keras.layers.RandomContrast(
            params.contrast, value_range=(0.0, 1.0), name="augment_contrast"
        )(x)
    return x


def batch_norm() -> keras.layers.BatchNormalization:
    """BatchNormalization with moving averages fast enough for small datasets.

    Keras's default momentum 0.99 lets the inference statistics lag the weights for hundreds
    of steps: a small dataset has few steps an epoch, and validation then sees one class.
    """
    return keras.layers.BatchNormalization(momentum=0.9)


def head(x: keras.KerasTensor, spec: ModelSpec) -> keras.KerasTensor:
    """Class scores: softmax for single-label data, sigmoid for multi-label.

    Always float32, also under a mixed-precision policy (train.mixed_precision): a float16
    softmax under- and overflows, and the loss and the served probabilities stay float32.
    """
    activation = "softmax" if spec.label_mode == "single" else "sigmoid"
    scores = keras.layers.Dense(
        spec.num_classes, activation=activation, name="scores", dtype="float32"
    )
    return scores(x)
