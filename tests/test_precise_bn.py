"""Precise BatchNorm: statistics re-estimated from training batches, weights untouched."""

import numpy as np

from models.common import precise_bn


def _model():
    import keras

    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
    )
    frozen = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    frozen.trainable = False  # a frozen backbone keeps its statistics
    raw = keras.Input((4,))
    return keras.Model(raw, frozen(inner(raw))), inner, frozen


def test_statistics_are_the_mean_of_the_batches_and_weights_do_not_change() -> None:
    model, inner, frozen = _model()
    dense, bn = inner.layers
    assert precise_bn.trainable_batch_norms(model) == [bn]
    images = np.random.default_rng(1).normal(3.0, 2.0, (64, 4)).astype("float32")
    bn.moving_mean.assign(np.full(3, 50.0, "float32"))  # far off, as after a few steps
    kept = frozen.layers[0].moving_variance.numpy().copy()
    weights = [w.numpy().copy() for w in model.trainable_weights]
    callback = precise_bn.PreciseBatchNorm(images, batch_size=16, steps_per_epoch=5)
    callback.set_model(model)
    callback.on_train_batch_end(3)  # not the epoch's last step: nothing happens
    np.testing.assert_allclose(bn.moving_mean.numpy(), 50.0)
    callback.on_train_batch_end(4)
    features = images @ dense.kernel.numpy() + dense.bias.numpy()
    batches = features.reshape(4, 16, 3)
    # momentum-weighted average of 4 batch means / variances, bias-corrected
    w = np.array([bn.momentum ** (3 - i) * (1 - bn.momentum) for i in range(4)])
    w /= w.sum()
    np.testing.assert_allclose(bn.moving_mean.numpy(), w @ batches.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), w @ batches.var(axis=1), rtol=1e-3)
    np.testing.assert_array_equal(frozen.layers[0].moving_variance.numpy(), kept)
    for before, after in zip(weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(after.numpy(), before)


def test_sample_is_seeded_and_bounded() -> None:
    rows = np.arange(100, 200)
    a, b = precise_bn.sample(rows, 30, 7), precise_bn.sample(rows, 30, 7)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 30 and set(a) <= set(rows) and len(set(a)) == 30
    assert len(precise_bn.sample(rows, 1000, 7)) == 100
