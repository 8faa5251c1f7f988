"""Every architecture: builds by name, takes raw uint8 of any size, trains a step, round-trips."""

from pathlib import Path

import numpy as np
import pytest
from conftest import edit_params, run_stage

import models
from data_processing.core.params import load_params
from models.common.spec import ModelSpec

SPEC = ModelSpec(channels=1, num_classes=3, image_size=(16, 16))


def test_registry_lists_architectures() -> None:
    assert {"mlp", "cnn"} <= set(models.available())


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000'; choose from \['cnn'"):
        models.get("resnet9000")


def test_train_stage_rejects_unknown_model(project: Path) -> None:
    proc = run_stage("models.train", "tiny", "nosuchnet", "base", cwd=project)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "params.yaml, field 'models.nosuchnet'" in proc.stderr
    assert f"expected a model from models/architectures/: {models.available()}" in proc.stderr


def test_train_stage_rejects_wrong_type(project: Path) -> None:
    edit_params(project / "params.yaml", hparams={"base": {"epochs": "ten"}})
    proc = run_stage("models.train", "tiny", "mlp", "base", cwd=project)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (
        "params.yaml, field 'hparams.base.epochs'" in proc.stderr and "found 'ten'" in proc.stderr
    )


@pytest.mark.parametrize("name", models.available())
def test_build_fit_save_reload(name: str, tmp_path: Path) -> None:
    import keras

    arch = models.get(name)
    root = Path(__file__).resolve().parents[1]
    model = arch.build(SPEC, load_params(f"models.{name}", arch.Params, root / "params.yaml"))
    for shape in ((2, 8, 8, 1), (2, 40, 23, 1)):  # any input size: resizing is in the graph
        out = model(np.zeros(shape, np.uint8))
        assert tuple(out.shape) == (2, 3)
        np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1), dtype=np.uint8)
    history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
