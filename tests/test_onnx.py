"""The bundle's model.onnx: written and checked by export, equal to TF, served without TF.

One tiny mlp bundle is built through the real stages for the whole module. Predictors run
in this process from the repo's models.common.serving (the file the bundle copies);
load_bundle runs in fresh subprocesses, since it swaps the bundle's code/ onto sys.path.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_same_model, pattern
from PIL import Image
from servers import shared_bundle

from data_processing.core import agreement
from data_processing.core.errors import CheckError, DataError
from models.common import onnx_export, serving

pytestmark = pytest.mark.slow

# Load a bundle in a clean interpreter; print what it ran on and one prediction.
LOAD = """
import json, sys
import numpy as np
from deployment.server.bundle import load_bundle
try:
    bundle = load_bundle(sys.argv[1], backend=sys.argv[2])
except Exception as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    raise SystemExit(0)
batch = np.stack([bundle.predictor.prepare(p) for p in sys.argv[3:]])
print(json.dumps({
    "backend": bundle.backend,
    "version": bundle.version,
    "tensorflow": "tensorflow" in sys.modules,
    "probs": bundle.predictor.predict(batch).tolist(),
}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """PNGs of several sizes and modes: gray 8x8, RGB 12x10, RGBA, 16-bit, palette."""
    folder, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(1)
    gray = Image.fromarray(pattern(1, rng), "L")
    made = {
        "gray8.png": gray,
        "rgb12x10.png": Image.fromarray(rng.integers(0, 256, (10, 12, 3), np.uint8), "RGB"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (9, 9, 4), np.uint8), "RGBA"),
        "i16.png": Image.fromarray(rng.integers(0, 65536, (16, 16)).astype(np.uint16)),
        "palette.png": gray.resize((20, 20)).convert("P"),
    }
    for name, image in made.items():
        image.save(folder / name)
    return [folder / name for name in made]


def load_in_subprocess(bundle: Path, backend: str, images: list[Path]) -> dict:
    cmd = [sys.executable, "-c", LOAD, str(bundle), backend, *map(str, images)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_writes_checked_onnx(bundle: Path):
    record = json.loads((bundle / "lineage.json").read_text())["onnx"]
    assert record["sha256"] == hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert record["opset"] == 17
    assert record["checked_images"] == 12  # the tiny test split: 3 classes x 4
    assert 0 <= record["tolerance_used"] <= 1.0 and record["label_agreement"] == 1.0
    assert (record["rtol"], record["atol"]) == (agreement.RTOL, agreement.ATOL)


def test_onnx_matches_tf(bundle: Path, images: list[Path]):
    tf_predictor, onnx_predictor = serving.load(bundle, "tf"), serving.load(bundle, "onnx")
    assert (onnx_predictor.backend, tf_predictor.backend) == ("onnx", "tf")
    assert (onnx_predictor.labels, onnx_predictor.channels) == (
        tf_predictor.labels,
        tf_predictor.channels,
    )
    for path in images:
        expected = tf_predictor.predict(tf_predictor.prepare(path)[None])
        found = onnx_predictor.predict(onnx_predictor.prepare(path)[None])
        assert_same_model(expected, found)
    batch = np.stack([onnx_predictor.prepare(p) for p in images[:1] * 5])
    expected = tf_predictor.predict(batch)
    assert_same_model(expected, onnx_predictor.predict(batch))


def test_onnx_backend_never_imports_tensorflow(bundle: Path, images: list[Path]):
    result = load_in_subprocess(bundle, "onnx", images[:1])
    assert result["backend"] == "onnx"
    assert result["tensorflow"] is False, "the onnx backend imported TensorFlow"
    tf_predictor = serving.load(bundle, "tf")
    expected = tf_predictor.predict(tf_predictor.prepare(images[0])[None])[0]
    assert_same_model(expected, result["probs"][0])
    keras_sha = hashlib.sha256((bundle / "model.keras").read_bytes()).hexdigest()
    assert result["version"] == keras_sha[:12]  # the model's identity, whatever the backend


# sitecustomize for the server and its workers: TensorFlow and Keras cannot be imported, as in
# the serve image (deployment/requirements-serve.lock)
BLOCK_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"{name} is blocked: the serve image has no TensorFlow")

sys.meta_path.insert(0, NoTensorFlow())
"""


def test_the_server_serves_onnx_with_tensorflow_blocked(
    bundle: Path, images: list[Path], tmp_path: Path
):
    """What the serve image promises: `serve --workers 2` on a bundle with model.onnx starts
    and answers a v2 infer (the image as BYTES) with onnxruntime's probabilities while
    tensorflow and keras cannot be imported, in the parent and in each worker."""
    from servers import call, image_input, running

    (tmp_path / "site").mkdir()
    (tmp_path / "site/sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    blocked = subprocess.run(
        [sys.executable, "-c", "import keras"], env=env, capture_output=True, text=True
    )
    assert "keras is blocked" in blocked.stderr  # the blocker works
    onnx_predictor = serving.load(bundle, "onnx")
    expected = onnx_predictor.predict(onnx_predictor.prepare(images[0])[None])[0]
    name = json.loads((bundle / "lineage.json").read_text())["cell"]
    flags = ("--bundle", bundle, "--workers", "2")
    with running(tmp_path, *flags, cwd=ROOT, feedback=tmp_path / "feedback", env=env) as srv:
        body = image_input(images[0].read_bytes())
        status, answer = call(srv, "POST", f"/v2/models/{name}/infer", body)
        log = srv.logged()
    assert status == 200, answer  # both onnxruntime, same kernels: equal to the last bits
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=0, atol=1e-6)
    assert log.count("(backend onnx;") == 2 and "Traceback" not in log, log[-3000:]


def test_tampered_onnx_is_refused(bundle: Path, tmp_path: Path, images: list[Path]):
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-20] ^= 0xFF  # inside the weights: still a loadable graph, a different model
    (copy / "model.onnx").write_bytes(bytes(data))
    for backend in ("onnx", "auto"):
        error = load_in_subprocess(copy, backend, images[:1]).get("error", "")
        assert error.startswith("ValueError"), error
        assert "model.onnx" in error and "lineage.json" in error


def test_auto_picks_onnx_then_tf(bundle: Path, tmp_path: Path, images: list[Path]):
    assert load_in_subprocess(bundle, "auto", images[:1])["backend"] == "onnx"
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    (copy / "model.onnx").unlink()
    result = load_in_subprocess(copy, "auto", images[:1])
    assert (result["backend"], result["tensorflow"]) == ("tf", True)
    error = load_in_subprocess(copy, "onnx", images[:1])["error"]
    assert error.startswith("FileNotFoundError") and "model.onnx" in error


def test_a_graph_that_differs_from_keras_fails_the_check(
    bundle: Path, monkeypatch, tmp_path: Path
):
    """A real mismatch: the ONNX file export writes holds another model's weights (what a
    wrong op conversion would do), and the real check measures the difference."""
    import keras

    model = serving.load(bundle, "tf").model
    other = keras.models.clone_model(model)  # same graph, freshly initialised weights
    convert = onnx_export.convert
    monkeypatch.setattr(onnx_export, "convert", lambda m, path: convert(other, path))
    images = np.stack([pattern(k % 3, np.random.default_rng(k)) for k in range(4)])[..., None]
    with pytest.raises(CheckError) as caught:
        onnx_export.export_onnx(model, tmp_path / "model.onnx", images)
    message = str(caught.value)
    assert str(tmp_path / "model.onnx") in message and "float32 rounding" in message
    found = float(message.split("max abs difference ")[1].split()[0])
    expected = np.abs(model.predict(images, verbose=0) - other.predict(images, verbose=0)).max()
    assert found == pytest.approx(float(expected), rel=1e-2) and found > 1e-3
    assert "4 test images" in message
    with pytest.raises(DataError, match="meta.json"):  # no shards: the file and the fix
        onnx_export.load_check_images(tmp_path / "shards")


def test_a_bundle_exported_before_serving_load_asks_for_a_re_export(
    bundle: Path, tmp_path: Path, images: list[Path]
):
    """A rollback to a bundle whose code/ predates serving.load (no `load`, no calibrated
    `decide`) is refused with the command that re-exports it, on both backends."""
    old = shutil.copytree(bundle, tmp_path / "old")
    serving_py = old / "code/models/common/serving.py"
    serving_py.write_text(serving_py.read_text().replace("def load(", "def _old_load("))
    for backend in ("onnx", "tf"):
        error = load_in_subprocess(old, backend, images[:1])["error"]
        assert error.startswith("RuntimeError") and "re-export it (dvc repro -f export@" in error


def test_savedmodel_writes_tf_servings_folder_from_a_bundle(bundle: Path, tmp_path: Path):
    """Export leaves the SavedModel out (its bytes differ each run); `reprovision savedmodel`
    writes one for TF Serving, whose signature gives the model's own scores."""
    out = tmp_path / "tiny/1"
    proc = subprocess.run(
        [sys.executable, "-m", "models.savedmodel", str(bundle), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "saved_model.pb").is_file()
    import tensorflow as tf

    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    batch = np.stack([pattern(k % 3, np.random.default_rng(k)) for k in range(3)])[..., None]
    (scores,) = serve(tf.constant(batch)).values()
    expected = serving.load(bundle, "tf").model_probs(batch)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=1e-6)  # both TensorFlow
    bad = subprocess.run(
        [sys.executable, "-m", "models.savedmodel", str(tmp_path), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected an export bundle with model.keras" in bad.stderr
