"""Precise BatchNorm: re-estimate BatchNorm statistics for the current weights before validation.

Why: Keras's moving averages start at mean 0, variance 1 and forget that by `momentum` (0.9)
per step. A few hundred training images give 5-10 steps an epoch, so for many epochs the
inference statistics are off by up to 10x (a layer's true variance is often under 0.01).
Measured on 160 RGB photos: train-mode accuracy 1.00, inference-mode chance after every one of
8 epochs; the best checkpoint was epoch 1 and the cell ended at chance. Re-estimating from
training batches (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"; PreciseBN in pycls and
Detectron2) gave 1.00 with the same weights.
"""

import keras
import numpy as np


def trainable_batch_norms(layer: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization that training updates, in nested models too (a frozen
    backbone's layers run in inference mode and keep their pretrained statistics)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer] if layer.trainable else []
    return [bn for sub in getattr(layer, "layers", []) for bn in trainable_batch_norms(sub)]


def sample(train_indices: np.ndarray, images: int, seed: int) -> np.ndarray:
    """Up to `images` train record indices, seeded, in random order (batches of mixed classes)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(train_indices)[:images]


class PreciseBatchNorm(keras.callbacks.Callback):
    """After each epoch's last step (before Keras validates and checkpoints), recompute every
    trainable BatchNormalization's mean and variance from `images` in batches of `batch_size`.

    Each batch goes through the model in training mode, as in a training step, so the layers
    average per-batch statistics with their own momentum; starting from zero and dividing by
    1 - momentum^batches removes the start value (the bias correction Adam uses). Weights
    do not change. Costs one forward pass over `images` per epoch.
    """

    def __init__(self, images: np.ndarray, batch_size: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.images, self.batch_size, self.steps = images, batch_size, steps_per_epoch
        self.layers: list[keras.layers.BatchNormalization] = []
        self.forward = None

    def set_model(self, model: keras.Model) -> None:
        import tensorflow as tf

        super().set_model(model)
        self.layers = trainable_batch_norms(model)
        self.forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch + 1 == self.steps and self.layers and len(self.images):
            self.recalibrate()

    def recalibrate(self) -> None:
        for bn in self.layers:
            bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
            bn.moving_variance.assign(np.zeros(bn.moving_variance.shape, "float32"))
        batches = range(0, len(self.images), self.batch_size)
        for start in batches:
            self.forward(self.images[start : start + self.batch_size])
        for bn in self.layers:
            scale = 1.0 / (1.0 - bn.momentum ** len(batches))
            bn.moving_mean.assign(bn.moving_mean * scale)
            bn.moving_variance.assign(bn.moving_variance * scale)
