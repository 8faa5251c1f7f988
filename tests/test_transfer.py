"""Transfer learning with weights our own pipeline produced: train mobilenet on dataset A,
export its backbone with `python -m models.common.transfer`, start dataset B's model from it.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import models
from data_processing.core.errors import DataError
from models.common.spec import ModelSpec

SPEC_A = ModelSpec(channels=1, num_classes=3, image_size=(16, 16))
SPEC_B = ModelSpec(channels=1, num_classes=5, image_size=(16, 16))
SMALL = {"filters": [8, 16], "repeats": [1, 1], "strides": [1, 2], "expansion": 2}


def _fit(model, num_classes: int, steps: int = 2, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (8 * steps, 12, 12, 1), dtype=np.uint8)
    y = rng.integers(0, num_classes, 8 * steps)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def _weights(layer) -> list[np.ndarray]:
    return [w.numpy() for w in layer.weights]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """Train A for two steps, save it as a run would, export the backbone the documented way."""
    import keras

    from models.common import transfer

    keras.utils.set_random_seed(0)
    arch = models.get("mobilenet")
    model = arch.build(SPEC_A, arch.Params(**SMALL))
    _fit(model, SPEC_A.num_classes)
    run_dir = tmp_path_factory.mktemp("run")
    model.save(run_dir / "model.keras")
    out = run_dir.parent / "pretrained" / "a-mobilenet.weights.h5"
    argv, sys.argv = sys.argv, ["transfer", str(run_dir), str(out)]
    try:
        transfer.main()
    finally:
        sys.argv = argv
    assert out.is_file()
    return out, _weights(model.get_layer("backbone"))


@pytest.mark.parametrize("freeze", [True, False])
def test_backbone_loads_into_new_head(pretrained, freeze: bool) -> None:
    path, saved = pretrained
    arch = models.get("mobilenet")
    model = arch.build(SPEC_B, arch.Params(**SMALL, weights=str(path), freeze_base=freeze))
    backbone, scores = model.get_layer("backbone"), model.get_layer("scores")
    assert _same(_weights(backbone), saved)  # the trained A backbone, not a fresh init
    assert scores.units == SPEC_B.num_classes
    assert tuple(model(np.zeros((2, 9, 9, 1), np.uint8)).shape) == (2, SPEC_B.num_classes)
    head_ids = {id(w) for w in scores.trainable_weights}
    if freeze:
        assert not backbone.trainable and backbone.trainable_weights == []
        assert {id(w) for w in model.trainable_weights} == head_ids
    else:
        assert backbone.trainable and len(backbone.trainable_weights) > 0
        assert len(model.trainable_weights) == len(backbone.trainable_weights) + len(head_ids)
    head_before = _weights(scores)
    _fit(model, SPEC_B.num_classes, seed=1)
    assert not _same(_weights(scores), head_before)  # the head always trains
    # frozen: every backbone value, BatchNorm statistics included, stays as loaded
    assert _same(_weights(backbone), saved) is freeze


def test_missing_weights_file_says_how_to_make_one(tmp_path: Path) -> None:
    arch = models.get("mobilenet")
    path = tmp_path / "nope.weights.h5"
    with pytest.raises(FileNotFoundError) as err:
        arch.build(SPEC_B, arch.Params(**SMALL, weights=str(path)))
    assert isinstance(err.value, DataError)  # a stage prints it as one line, no traceback
    assert str(path) in str(err.value) and "python -m models.common.transfer" in str(err.value)


@pytest.mark.parametrize(
    "change", [{"filters": [16, 32]}, {"repeats": [1, 2]}, {"repeats": [1], "filters": [8]}]
)
def test_weights_from_another_architecture_are_rejected(pretrained, change: dict) -> None:
    arch = models.get("mobilenet")
    params = {**SMALL, **change, "strides": [1, 2][: len(change.get("repeats", [1, 1]))]}
    with pytest.raises(ValueError, match="same architecture params"):
        arch.build(SPEC_B, arch.Params(**params, weights=str(pretrained[0])))


def test_freeze_without_weights_is_a_params_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="freeze_base: true needs pretrained weights"):
        models.get("mobilenet").Params(freeze_base=True)


def test_only_backbone_models_export(tmp_path: Path) -> None:
    from models.common.transfer import save_backbone

    arch = models.get("cnn")
    model = arch.build(SPEC_A, arch.Params())
    with pytest.raises(ValueError, match="no sub-model named 'backbone'"):
        save_backbone(model, tmp_path / "cnn.weights.h5")
