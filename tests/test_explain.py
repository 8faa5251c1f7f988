"""Explanations: heat maps for every architecture of the zoo (models/common/explain.py), the
failure grid's, and POST /explain on the real server over real HTTP on 127.0.0.1."""

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES
from PIL import Image
from servers import call, multipart, png, running, shared_bundle

import models
from models.common.explain import GRAD_CAM, INTEGRATED_GRADIENTS, Explainer, explain, overlay
from models.common.spec import ModelSpec

SIZE = (16, 16)  # the graph's image_size
INPUT = (12, 20)  # (h, w) of the images explained: not the graph's size, not square
NO_TENSORFLOW = """
import sys


class NoTensorFlow:  # what a serve-only image without TensorFlow sees
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoTensorFlow())
"""


def _built(name: str, channels: int):
    module = models.get(name)
    return module.build(ModelSpec(channels, 3, SIZE), module.Params())


CASES = [(name, 1) for name in models.available()] + [("mlp", 3), ("mobilenet", 3)]


@pytest.mark.parametrize(("name", "channels"), CASES)
def test_every_architecture_has_heat_maps_of_the_input_size(name: str, channels: int) -> None:
    model = _built(name, channels)
    images = np.random.default_rng(0).integers(0, 256, (3, *INPUT, channels), dtype=np.uint8)
    expected = INTEGRATED_GRADIENTS if name == "mlp" else GRAD_CAM  # mlp: no conv layer
    explainer = Explainer(model)
    assert explainer.method == expected
    for class_index in (None, 2, np.array([0, 1, 2])):
        heat = explainer(images, class_index)
        assert heat.shape == (3, *INPUT) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    # the compiled explainer (the server's) and the eager one (evaluate's) agree at the stored
    # size; a resize that does something differs by up to 0.5 in eager Keras
    stored = images[:, :4, :4].repeat(4, axis=1).repeat(4, axis=2)  # SIZE
    assert np.allclose(explainer(stored), explain(model, stored)[0], atol=1e-5)
    if name == "mobilenet":  # Grad-CAM inside the nested backbone, also when it is frozen
        assert explainer.layer.startswith("backbone/")
        model.get_layer("backbone").trainable = False
        assert np.allclose(Explainer(model)(images), explainer(images), atol=1e-5)


def _square(h: int = 12, w: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A black uint8 image [1, h, w, 1] with a bright block in its top-left, and that mask."""
    mask = np.zeros((h, w), bool)
    mask[2:6, 3:9] = True
    image = np.where(mask, 230, 0).astype(np.uint8)[None, :, :, None]
    return image, mask


def _linear_head(x, kernel: np.ndarray):
    import keras

    head = keras.layers.Dense(2, activation="softmax", name="scores")
    out = head(x)
    head.set_weights([kernel.astype(np.float32), np.zeros(2, np.float32)])
    return out


def _inputs():
    import keras

    raw = keras.Input((None, None, 1), dtype="uint8", name="image")
    x = keras.layers.Resizing(*SIZE, name="resize")(raw)
    return raw, keras.layers.Rescaling(1 / 255)(x)


def test_grad_cam_finds_the_region_the_class_depends_on() -> None:
    import keras

    # class 1's logit is the mean brightness, class 0's its negative: class 1 is the block
    raw, x = _inputs()
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(raw, _linear_head(x, np.array([[-1.0, 1.0]])))
    image, mask = _square()
    heat, method = explain(model, image, 1)
    assert method == GRAD_CAM and heat.shape == (1, *mask.shape)
    assert heat[0][mask].sum() / heat[0].sum() > 0.8  # rows and columns not swapped
    assert heat[0][mask].min() > heat[0][~mask].mean()
    assert not explain(model, image, 0)[0].any()  # nothing in the image speaks for class 0


def test_integrated_gradients_attribute_the_pixels_a_dense_model_weighs() -> None:
    import keras

    raw, x = _inputs()  # an MLP: class 1 sums the pixels in a block, class 0 nothing
    weights = np.zeros(SIZE, np.float32)
    weights[4:8, 2:7] = 1.0
    kernel = np.stack([np.zeros(weights.size), weights.ravel()], axis=1)
    model = keras.Model(raw, _linear_head(keras.layers.Flatten()(x), kernel))
    image = np.full((1, *SIZE, 1), 200, np.uint8)
    heat, method = explain(model, image, 1)
    assert method == INTEGRATED_GRADIENTS
    assert np.allclose(heat[0], weights, atol=1e-6)  # exactly the weighed pixels, evenly


def test_failure_grid_shows_each_mistake_beside_its_heat_map() -> None:
    from models.common.plots import failures_png
    from models.evaluate import Failures

    model = _built("cnn", 1)
    failures = Failures(2)
    images = np.random.default_rng(1).integers(0, 256, (3, *SIZE, 1), dtype=np.uint8)
    y = np.eye(3, dtype=np.int64)[[0, 1, 2]]
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2]], np.float32)
    pred = np.eye(3, dtype=np.int64)[probs.argmax(1)]
    failures.update(np.arange(3), images, y, probs, pred, list(CLASSES))
    shown, captions, heat, method = failures.result(model)
    assert len(shown) == 2 and method == GRAD_CAM and heat.shape == (2, *SIZE)
    plain = Image.open(io.BytesIO(failures_png(shown, captions, "t")))
    paired = Image.open(io.BytesIO(failures_png(shown, captions, "t", heat)))
    assert paired.width > 1.6 * plain.width  # a heat map beside each image
    assert overlay(shown[0], heat[0]).shape == (*SIZE, 3)


# ---- POST /explain on the real server ----


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_bundle(tmp_path_factory)  # the tiny mlp, with model.onnx


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.slow
def test_explain_over_http_matches_predict(bundle: Path, tmp_path: Path) -> None:
    upload = png(CLASSES.index("diagonal"))
    with running(tmp_path, "--bundle", bundle) as srv:  # default backend: onnx
        status, predicted = call(srv, "POST", "/predict", *multipart(upload))
        assert status == 200, predicted
        status, body = call(srv, "POST", "/explain", *multipart(upload), timeout=120)
        assert status == 200, body
        assert body["method"] == INTEGRATED_GRADIENTS  # the tiny bundle is an mlp
        assert body["label"] == predicted["label"] == body["explained"]["label"]
        assert body["model_version"] == predicted["model_version"]
        assert abs(body["score"] - predicted["score"]) < 1e-5
        for ours, theirs in zip(body["top_k"], predicted["top_k"], strict=True):
            assert ours["label"] == theirs["label"] and abs(ours["score"] - theirs["score"]) < 1e-5
        heat = _decoded(base64.b64decode(body["heatmap_png"]))
        assert heat.mode == "RGB" and heat.size == (224, 224) and body["size"] == [8, 8]

        raw = {"Content-Type": "image/png", "Accept": "image/png"}  # raw body, PNG answer
        status, data = call(srv, "POST", "/explain?label=bar", upload, raw)
        assert status == 200 and _decoded(data).size == (224, 224)

        for payload, headers, wanted in (
            (b"not an image", {"Content-Type": "image/png"}, 400),
            (b"hello", {"Content-Type": "text/plain"}, 415),
            (*multipart(upload, field="other"), 400),
            (b"", {"Content-Type": "image/png"}, 400),
        ):
            status, error = call(srv, "POST", "/explain", payload, headers)
            assert status == wanted and isinstance(error, dict) and error["error"], error
        status, error = call(srv, "POST", "/explain?label=nope", upload, raw)
        assert status == 400 and "nope" in error["error"]
        status, again = call(srv, "POST", "/explain", *multipart(upload))  # still serving
        assert status == 200 and again["heatmap_png"] == body["heatmap_png"]
        assert call(srv, "GET", "/v2/health/ready")[0] == 200
        assert "Traceback" not in srv.logged()


@pytest.mark.slow
def test_explain_without_tensorflow_is_501_and_predict_still_works(
    bundle: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": str(site)}
    with running(tmp_path, "--bundle", bundle, env=env) as srv:
        status, error = call(srv, "POST", "/explain", *multipart(png(0)))
        assert status == 501 and "TensorFlow" in error["error"], error
        assert call(srv, "POST", "/predict", *multipart(png(0)))[0] == 200
