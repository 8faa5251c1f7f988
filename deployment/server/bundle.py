"""Load an export bundle for serving: the one place in deployment allowed to touch sys.path.

A bundle (models/export.py) carries its own copies of the project modules it needs under
code/models/ and code/data_processing/. `load_bundle` puts that code/ first on sys.path and
imports the bundle's `models.common.serving` from there, so preprocessing is the code the
model was trained with, never the repo's. For that reason nothing in the serving process
may import the repo's `models` or `data_processing` packages (deployment/release/select.py and
deploy_test.py are DVC stage scripts; the server never imports them).

Loading a second bundle in the same process (hot reload) first drops every imported
`models.*` / `data_processing.*` module from sys.modules and the previous code/ from
sys.path. Objects created from the previous bundle (its Bundle, Predictor, model and
functions) keep working: they hold references to their own module objects. Only new
imports resolve against the new code/.

Two backends run the same model (`backend=`): "onnx" runs the bundle's model.onnx on
onnxruntime through the bundle's `serving.OnnxPredictor` and never imports TensorFlow (the
server starts in about a second and a one-image request costs ~0.05 ms of model time for the
digits CNN); "tf" runs model.keras as one tf.function. "auto" picks onnx when model.onnx
exists. Either way `version` is sha256(model.keras)[:12], the model's identity.

Use:
    bundle = load_bundle(Path("models/runs/digits-cnn/bundle"))
    probs = bundle.predict(bundle.prepare(png_bytes)[None])   # [1, K] float32
"""

import hashlib
import importlib
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

BUNDLED_PACKAGES = ("models", "data_processing")  # shipped in code/, never from the repo
SERVING_MODULE = "models.common.serving"
BACKENDS = ("auto", "onnx", "tf")
TF_NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)")
_active_code_dir: str | None = None  # the code/ currently on sys.path


def _threads(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@contextmanager
def _quiet_stderr():
    """Send fd 2 to a file; then replay what is not TF's C++ start-up noise.

    The same trick as models/common/quiet.py, which deployment may not import (it is a
    bundled module).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            for line in log.read().decode(errors="replace").splitlines(keepends=True):
                if not TF_NOISE.match(line):
                    sys.stderr.write(line)


def configure_tensorflow(intra_op: int | None = None, inter_op: int | None = None):
    """Import TensorFlow and set its thread pools; they can be set only before first use.

    Defaults: intra-op = the CPUs this process may use (one request's ops in parallel),
    inter-op = 2 (concurrent requests overlap). Env SERVE_INTRA_OP / SERVE_INTER_OP override.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_stderr():
        import tensorflow as tf

        intra = intra_op or _threads("SERVE_INTRA_OP", len(os.sched_getaffinity(0)))
        inter = inter_op or _threads("SERVE_INTER_OP", 2)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:  # already initialised (a second bundle): the first setting stays
            pass
        tf.config.list_logical_devices()  # device init prints its own lines
    return tf


def _forget_bundled_modules() -> None:
    global _active_code_dir
    for name in [n for n in sys.modules if n.split(".")[0] in BUNDLED_PACKAGES]:
        del sys.modules[name]
    if _active_code_dir is not None:
        sys.path[:] = [p for p in sys.path if p != _active_code_dir]
    _active_code_dir = None


def _import_serving(code_dir: Path) -> ModuleType:
    global _active_code_dir
    _forget_bundled_modules()
    sys.dont_write_bytecode = True  # never write __pycache__ into a (DVC-tracked) bundle
    sys.path.insert(0, str(code_dir))
    _active_code_dir = str(code_dir)
    importlib.invalidate_caches()
    return importlib.import_module(SERVING_MODULE)


def foreign_modules(code_dir: Path) -> list[str]:
    """Bundled-package modules loaded from anywhere but code_dir (must be empty)."""
    bad = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if name.split(".")[0] in BUNDLED_PACKAGES and origin:
            if not Path(origin).resolve().is_relative_to(code_dir):
                bad.append(f"{name} from {origin}")
    return bad


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (the pointer's and the version's hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name(path: Path) -> str:
    lineage = path / "lineage.json"
    if lineage.is_file() and (cell := json.loads(lineage.read_text()).get("cell")):
        return str(cell)
    return path.parent.name if path.name == "bundle" else path.name  # runs/<cell>/bundle


@dataclass
class Bundle:
    """A loaded bundle: identity, labels, and a compiled predict path (ONNX or TF)."""

    path: Path
    name: str  # the cell, e.g. "digits-cnn": the model name in every URL
    version: str  # sha256(model.keras)[:12], as deployment/production.json's sha256[:12]
    labels: list[str]  # output index -> class name
    channels: int  # C of the uint8 [N, H, W, C] input (1 gray, 3 RGB)
    serving: ModuleType  # the bundle's own models.common.serving
    predictor: object  # serving.OnnxPredictor or Predictor: converts raw images as training did
    backend: str  # "onnx" (onnxruntime, no TensorFlow) or "tf"
    _fn: object = field(repr=False)  # any callable uint8 [N, H, W, C] -> float32 [N, K]

    def prepare(self, image) -> np.ndarray:
        """uint8 [H, W, C] from a PIL image, encoded bytes or a path (any size and mode)."""
        return self.predictor.prepare(image)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, K] class probabilities for uint8 [N, H, W, C] images of one size."""
        return np.asarray(self._fn(batch))

    def warm_up(self) -> np.ndarray:
        """Run the model once on a blank 8x8 image (TF traces here); return its probabilities."""
        return self.predict(np.zeros((1, 8, 8, self.channels), np.uint8))


def _backend(path: Path, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "onnx" if (path / "model.onnx").is_file() else "tf"
    return backend


def _check_onnx(path: Path) -> None:
    """model.onnx must exist and, when lineage.json records it, have that sha256."""
    if not (path / "model.onnx").is_file():
        raise FileNotFoundError(f"{path}: no model.onnx for the onnx backend (export writes it)")
    lineage = path / "lineage.json"
    record = json.loads(lineage.read_text()).get("onnx") if lineage.is_file() else None
    expected = record.get("sha256") if isinstance(record, dict) else None
    if expected and (digest := file_sha256(path / "model.onnx")) != expected:
        raise ValueError(
            f"{path}/model.onnx has sha256 {digest}, lineage.json says {expected}: "
            "the file was changed after export"
        )


def _onnx_predictor(serving: ModuleType, path: Path, intra_op, inter_op):
    if not hasattr(serving, "OnnxPredictor"):
        raise RuntimeError(f"{path}/code predates ONNX serving: use backend='tf'")
    intra = intra_op or _threads("SERVE_INTRA_OP", 1)
    inter = inter_op or _threads("SERVE_INTER_OP", 1)
    predictor = serving.OnnxPredictor(path, intra, inter)
    return predictor, predictor.predict_batch


def _tf_predictor(serving: ModuleType, path: Path, tf):
    predictor = serving.Predictor(path)
    model = predictor.model
    spec = tf.TensorSpec([None, None, None, int(predictor.channels)], tf.uint8)
    # One concrete graph for every batch size and image size: no retracing per request.
    return predictor, tf.function(lambda x: model(x, training=False), input_signature=[spec])


def load_bundle(
    path: Path | str,
    intra_op: int | None = None,
    inter_op: int | None = None,
    sha256: str | None = None,
    backend: str = "auto",
) -> Bundle:
    """Load the bundle at `path` with its own code/ (see the module docstring).

    Args:
        path: the bundle folder (model.keras, labels.json, code/, and model.onnx for onnx).
        intra_op, inter_op: thread counts. onnx: per session; default intra-op env
            SERVE_INTRA_OP else 1, inter-op SERVE_INTER_OP else 1 (sequential execution).
            One thread per call is the fastest on 2 cores at 8 concurrent requests: a
            one-image call takes ~0.05 ms, too little to split, and the server's threadpool
            already runs requests side by side (bench/README.md, bench/serve.py). tf: the
            process's pools, first load only (configure_tensorflow).
        sha256: when given, the full sha256 model.keras must have (the production pointer's);
            checked before any of the bundle's code is imported. For onnx, model.onnx is also
            checked against lineage.json's onnx.sha256 when recorded.
        backend: "onnx" (onnxruntime, TensorFlow never imported), "tf", or "auto" (onnx when
            the bundle has model.onnx, else tf).

    Returns:
        Bundle, its serving module imported from `path`/code.

    Raises:
        FileNotFoundError: no model.keras, labels.json or code/ serving module (or model.onnx
            for backend "onnx").
        ValueError: model.keras or model.onnx does not have the expected sha256, or an
            unknown backend.
        RuntimeError: a bundled-package module was loaded from outside code/.
    """
    path = Path(path).resolve()
    backend = _backend(path, backend)
    code_dir = path / "code"
    for required in ("model.keras", "labels.json", "code/models/common/serving.py"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"{path}: not a bundle, {required} missing")
    digest = file_sha256(path / "model.keras")
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{path}/model.keras has sha256 {digest}, expected {sha256}")
    if backend == "onnx":
        _check_onnx(path)
        serving = _import_serving(code_dir)
        predictor, fn = _onnx_predictor(serving, path, intra_op, inter_op)
    else:
        tf = configure_tensorflow(intra_op, inter_op)
        serving = _import_serving(code_dir)
        predictor, fn = _tf_predictor(serving, path, tf)
    if bad := foreign_modules(code_dir):
        raise RuntimeError(f"bundle modules loaded from outside {code_dir}: {bad}")
    return Bundle(
        path=path,
        name=_name(path),
        version=digest[:12],
        labels=list(predictor.labels),
        channels=int(predictor.channels),
        serving=serving,
        predictor=predictor,
        backend=backend,
        _fn=fn,
    )
