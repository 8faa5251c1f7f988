"""The same model gives the same file bytes (models/common/canonical.py): what lets a clean run
reproduce dvc.lock. Two saves of one Keras model differ in their save time and Python object
ids, and two conversions of one model to ONNX in their generated names; after the rewrite
they are byte for byte the same, and both still load and predict as before."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _model():
    import keras

    from models.architectures import cnn
    from models.common.spec import ModelSpec

    keras.utils.set_random_seed(1)
    return cnn.build(ModelSpec(1, 3, (12, 12)), cnn.Params())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Save a freshly built model (its own process: other object ids, another clock second).
SAVE = """
import sys, time
sys.path.insert(0, "tests")
from test_canonical import _model
from models.common import canonical
time.sleep(1.1)
_model().save(sys.argv[1])
if sys.argv[2] == "canonical":
    canonical.keras_file(sys.argv[1])
"""


def test_two_saves_of_one_model_have_one_sha256(tmp_path: Path) -> None:
    import keras
    from conftest import ROOT

    paths = {}
    for run in ("a", "b", "raw-a", "raw-b"):
        paths[run] = tmp_path / f"{run}.keras"
        mode = "raw" if run.startswith("raw") else "canonical"
        cmd = [sys.executable, "-c", SAVE, str(paths[run]), mode]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert _sha(paths["raw-a"]) != _sha(paths["raw-b"])  # Keras alone: a save time, object ids
    assert _sha(paths["a"]) == _sha(paths["b"])
    x = np.random.default_rng(0).integers(0, 255, (2, 12, 12, 1), dtype=np.uint8)
    raw = keras.saving.load_model(paths["raw-a"]).predict(x, verbose=0)
    np.testing.assert_array_equal(keras.saving.load_model(paths["a"]).predict(x, verbose=0), raw)


def test_two_conversions_to_onnx_have_one_sha256(tmp_path: Path) -> None:
    from models.common import onnx_export

    model = _model()
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_export.convert(model, first)
    _model()  # more tf2onnx and Keras names taken in this process in between
    onnx_export.convert(model, second)
    assert _sha(first) == _sha(second)
    images = np.random.default_rng(0).integers(0, 255, (4, 12, 12, 1), dtype=np.uint8)
    assert onnx_export.agreement(model, first, images).passed
