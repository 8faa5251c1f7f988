"""Load an export bundle for serving: the one place in the server that touches sys.path.

A bundle (models/export.py) carries its own copy of the project code it needs under code/.
`load_bundle` puts that code/ first on sys.path, imports the bundle's
`models.common.serving` from there and calls its `load`, so preprocessing and the model are
the code the model was trained with, never the repo's. Loading another bundle (hot reload)
first drops the previous bundle's modules and code/; objects made from it keep working, as
they hold their own module objects.

Use:
    bundle = load_bundle(Path("deployment/digits/production"))
    probs = bundle.predictor.predict_images([bundle.predictor.prepare(png_bytes)])  # [1, K]
"""

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from deployment.server import ood

BUNDLED_PACKAGES = ("models", "data_processing")  # shipped in code/, never from the repo
SERVING_MODULE = "models.common.serving"
EXPLAIN_MODULE = "models.common.explain"  # POST /explain; bundles exported before it lack it
BACKENDS = ("auto", "onnx", "tf")
_active_code_dir: str | None = None  # the code/ currently on sys.path


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (the pointer's and the version's hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded bundle: its identity and its predictor (the bundle's own serving.Predictor)."""

    path: Path
    name: str  # the cell, e.g. "digits-cnn-base": the model name in every URL
    version: str  # sha256(model.keras)[:12], as the production pointer's sha256[:12]
    predictor: object  # prepare(image) -> uint8 [h, w, C]; predict_images(list) -> [N, K]
    serving: ModuleType  # the bundle's models.common.serving
    input_stats: ood.InputStats | None = None  # input_stats.json: the OOD score's reference
    explain: ModuleType | None = None  # the bundle's models.common.explain, if it has one
    input_size: tuple[int, int] | None = None  # (h, w) prepare resizes images to
    model_size: tuple[int, int] | None = None  # (h, w) the model's graph resizes to
    dataset: str | None = None  # lineage.json's: the name its production model is served by
    served_as: str | None = None  # the name the server serves it by (lifecycle.State sets it)

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    @property
    def channels(self) -> int:
        return self.predictor.channels

    @property
    def backend(self) -> str:
        return self.predictor.backend

    def warm_up(self) -> np.ndarray:
        """Run the model once on a blank 8x8 image (TF traces here); return its probabilities."""
        return self.predictor.predict(np.zeros((1, 8, 8, self.channels), np.uint8))


def _import_serving(code_dir: Path) -> ModuleType:
    global _active_code_dir
    for name in [n for n in sys.modules if n.split(".")[0] in BUNDLED_PACKAGES]:
        del sys.modules[name]
    if _active_code_dir is not None:
        sys.path[:] = [p for p in sys.path if p != _active_code_dir]
    sys.dont_write_bytecode = True  # never write __pycache__ into a (DVC-tracked) bundle
    sys.path.insert(0, str(code_dir))
    _active_code_dir = str(code_dir)
    importlib.invalidate_caches()
    return importlib.import_module(SERVING_MODULE)


def _import_explain(code_dir: Path) -> ModuleType | None:
    """The bundle's explanations module (numpy only until it is called), or None."""
    if not (code_dir / (EXPLAIN_MODULE.replace(".", "/") + ".py")).is_file():
        return None
    return importlib.import_module(EXPLAIN_MODULE)


def _lineage(path: Path) -> dict:
    lineage = path / "lineage.json"
    return json.loads(lineage.read_text()) if lineage.is_file() else {}


def _name(path: Path) -> str:
    if cell := _lineage(path).get("cell"):
        return str(cell)
    return path.parent.name if path.name == "bundle" else path.name  # runs/<cell>/bundle


def _backend(path: Path, backend: str) -> str:
    """The backend to load: auto is onnx when the bundle has model.onnx, else tf."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "onnx" if (path / "model.onnx").is_file() else "tf"
    return backend


def _check_files(path: Path, backend: str, sha256: str | None) -> str:
    """The sha256 of model.keras, after checking the files `backend` (onnx or tf) needs, and
    model.onnx against lineage.json's record of it."""
    for required in ("model.keras", "labels.json", "params.json", "code/models/common/serving.py"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"{path}: not a bundle, {required} missing")
    digest = file_sha256(path / "model.keras")
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{path}/model.keras has sha256 {digest}, expected {sha256}")
    onnx = path / "model.onnx"
    if backend == "onnx":
        if not onnx.is_file():
            raise FileNotFoundError(
                f"{path}: no model.onnx for the onnx backend (export writes it)"
            )
        lineage = path / "lineage.json"
        record = json.loads(lineage.read_text()).get("onnx") if lineage.is_file() else None
        expected = record.get("sha256") if isinstance(record, dict) else None
        if expected and (found := file_sha256(onnx)) != expected:
            raise ValueError(
                f"{onnx} has sha256 {found}, lineage.json says {expected}: "
                "the file was changed after export"
            )
    return digest


def _sizes(path: Path) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """params.json's spec: (input_size, image_size), each (h, w) or None (the budget's)."""
    spec = json.loads((path / "params.json").read_text()).get("spec", {})
    sizes = (spec.get("input_size"), spec.get("image_size"))
    return tuple((int(s[0]), int(s[1])) if s else None for s in sizes)


def _threads(backend: str, intra_op: int | None, inter_op: int | None) -> tuple[int, int]:
    """onnx: 1 and 1 (a one-image call is too small to split; requests already run side by
    side); tf: every core within an op, 2 across. Env SERVE_INTRA_OP / SERVE_INTER_OP win
    over the defaults, arguments over both."""
    cores = len(os.sched_getaffinity(0))
    intra = intra_op or int(os.environ.get("SERVE_INTRA_OP", 1 if backend == "onnx" else cores))
    inter = inter_op or int(os.environ.get("SERVE_INTER_OP", 1 if backend == "onnx" else 2))
    return intra, inter


def load_bundle(
    path: Path | str,
    intra_op: int | None = None,
    inter_op: int | None = None,
    sha256: str | None = None,
    backend: str = "auto",
) -> Bundle:
    """Load the bundle at `path` with its own code/.

    Args:
        path: the bundle folder (model.keras, labels.json, code/, model.onnx for onnx).
        intra_op, inter_op: model threads (`_threads`); tf sets them on the first load only.
        sha256: when given, the sha256 model.keras must have, checked before any of the
            bundle's code is imported.
        backend: "onnx" (onnxruntime, TensorFlow never imported), "tf", or "auto" (onnx when
            the bundle has model.onnx).

    Raises:
        FileNotFoundError: a file the bundle or the backend needs is missing.
        ValueError: model.keras or model.onnx has another sha256, or an unknown backend.
        RuntimeError: a bundled module was loaded from outside code/, or the bundle was
            exported before its code/ had serving.load and calibration's decide (re-export).
    """
    path = Path(path).resolve()
    backend = _backend(path, backend)
    digest = _check_files(path, backend, sha256)
    serving = _import_serving(path / "code")
    explain = _import_explain(path / "code")  # while code/ is on the path, with serving
    if not hasattr(serving, "load") or not hasattr(serving.Predictor, "decide"):
        raise RuntimeError(
            f"{path} was exported by an older reprovision, before serving.load and calibrated "
            f"decisions; re-export it (dvc repro -f export@{_name(path)}) to serve it"
        )
    predictor = serving.load(path, backend, *_threads(backend, intra_op, inter_op))
    if bad := serving.foreign_modules(path / "code", BUNDLED_PACKAGES):
        raise RuntimeError(f"bundle modules loaded from outside {path / 'code'}: {bad}")
    input_size, model_size = _sizes(path)
    return Bundle(
        path,
        _name(path),
        digest[:12],
        predictor,
        serving,
        ood.load(path, serving),
        explain=explain,
        input_size=input_size,
        model_size=model_size,
        dataset=_lineage(path).get("dataset"),
    )
