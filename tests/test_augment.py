"""Augmentation chosen per model in params: off by default, active only when training."""

from pathlib import Path

import numpy as np
import pytest

import models
from data_processing.core.params import load_params
from models.common.spec import Augment, ModelSpec

SPEC = ModelSpec(channels=1, num_classes=3, image_size=(16, 16))
PIXELS = ModelSpec(channels=1, num_classes=3, image_size=(16, 16), standardize=False)  # 0..1
ON = Augment(flip="horizontal", rotate=0.1, zoom=0.2, contrast=0.3)
ROOT = Path(__file__).resolve().parents[1]


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (4, 12, 12, 1), dtype=np.uint8)


def _preprocess(params: Augment, spec: ModelSpec = PIXELS):
    import keras

    from models.common.layers import inputs

    raw, x = inputs(spec, params)
    return keras.Model(raw, x)


def _names(params: Augment) -> list[str]:
    return [x.name for x in _preprocess(params).layers if x.name.startswith("augment")]


def test_each_key_adds_its_layer_and_zero_adds_none() -> None:
    assert _names(Augment()) == []
    assert _names(ON) == ["augment_flip", "augment_rotate", "augment_zoom", "augment_contrast"]
    assert _names(Augment(zoom=0.1)) == ["augment_zoom"]


def test_inference_is_untouched_training_is_augmented() -> None:
    x = _images()
    plain, augmented = _preprocess(Augment()), _preprocess(ON)
    first = np.asarray(augmented(x, training=False))  # what predict, export and serving do
    np.testing.assert_array_equal(np.asarray(augmented(x, training=False)), first)
    np.testing.assert_array_equal(first, np.asarray(plain(x)))  # inference = resize + rescale
    predicted = augmented.predict(x, verbose=0)
    np.testing.assert_array_equal(augmented.predict(x, verbose=0), predicted)
    np.testing.assert_allclose(predicted, first, atol=1 / 255)  # graph vs eager resize rounding
    trained = np.asarray(augmented(x, training=True))
    assert trained.shape == first.shape and not np.allclose(trained, first, atol=1e-3)
    assert trained.min() >= 0.0 and trained.max() <= 1.0  # contrast keeps the 0..1 range


def test_augmentation_runs_on_pixels_then_each_image_is_standardized() -> None:
    model = _preprocess(ON, SPEC)
    names = [layer.name for layer in model.layers]
    assert names.index("augment_contrast") < names.index("standardize")  # contrast clips 0..1
    for training in (False, True):
        out = np.asarray(model(_images(), training=training)).reshape(4, -1)
        np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.std(axis=1), 1.0, atol=0.05)  # epsilon 1e-3 on variance
    flat = np.full((1, 12, 12, 1), 77, np.uint8)  # no contrast at all: zeros, not a blow-up
    np.testing.assert_allclose(np.asarray(model(flat, training=False)), 0.0, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet", "vgg", "mobilenet"])
def test_models_with_augmentation_predict_deterministically_and_round_trip(
    name: str, tmp_path: Path
) -> None:
    import keras

    keras.utils.set_random_seed(0)
    arch = models.get(name)
    model = arch.build(SPEC, arch.Params(augment=ON))
    x = _images()
    out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), out)
    # eager vs graph resize rounding (under 1/255), scaled up by the standardization
    np.testing.assert_allclose(np.asarray(model(x, training=False)), out, atol=1e-3)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), out, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["resnet", "vgg", "mobilenet"])
def test_digits_defaults_leave_augmentation_off(name: str) -> None:
    arch = models.get(name)
    assert load_params(f"models.{name}", arch.Params, ROOT / "params.yaml").augment == Augment()
