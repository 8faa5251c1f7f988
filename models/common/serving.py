"""The one predictor path: `load(bundle) -> Predictor`, with `prepare` and `predict`.

A bundle's code/ carries this file and its imports, so export, profile, evaluate, the deploy
test and the server all run the model through it: raw images of any size and mode go through
`prepare` (data_processing.images.shrink, as the shard writer did for training), and uint8
[N, H, W, C] batches through `predict`. Two backends run the same model: "onnx" (the bundle's
model.onnx on onnxruntime; never imports TensorFlow) and "tf" (model.keras as one
tf.function, `inference_fn`). Both then apply the bundle's calibration.json, when it has one
(common/postprocess.py: temperature scaling, so `predict` serves calibrated scores, and the
per-class cut-offs `decide` uses).

Run (the deploy test does this in a clean process whose path holds only the bundle's code/):
    python -B -E -s BUNDLE/code --bundle BUNDLE --images images.json --out out.json \
        [--backend tf|onnx]
"""

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.images import shrink
from models.common.postprocess import Postprocess, decide
from models.common.quiet import import_tensorflow

PROJECT_PACKAGES = ("data_processing", "models", "deployment")
# onnxruntime's arena keeps what a call took; a call over these gives it back at its end
# (a 2,000-image digits call kept 331 MiB; giving it back costs ~3% of a 32-image call)
SHRINK_IMAGES, SHRINK_BYTES = 32, 1 << 20
BACKENDS = ("auto", "onnx", "tf")
INPUT_NAME = "images"  # the uint8 [N, H, W, C] input, in the tf.function and in model.onnx
MAX_VALUES = 4096  # pixels gray_stats reads at most: microseconds for any image


def gray_stats(image: np.ndarray) -> tuple[float, float]:
    """(brightness, contrast) of uint8 [h, w, C]: the mean and standard deviation of its
    gray values (the channel mean), on a strided grid of at most MAX_VALUES pixels. Export
    measures the training images with it (input_stats.py) and the server each served image
    (deployment/server/ood.py, through the bundle): one function, so the two agree."""
    h, w, channels = image.shape
    step = max(1, math.ceil(math.sqrt(h * w / MAX_VALUES)))
    view = image[::step, ::step] if step > 1 else image
    flat = view.reshape(-1, channels).astype(np.float64)
    gray = flat[:, 0] if channels == 1 else flat @ np.full(channels, 1.0 / channels)
    mean = float(gray.sum()) / gray.size  # sums and a dot: a few us, where np.std takes 10+
    return mean, math.sqrt(max(float(gray @ gray) / gray.size - mean * mean, 0.0))


def inference_fn(model):
    """The model in inference mode as one tf.function over uint8 [N, H, W, C]: one concrete
    graph for every batch and image size, so no request retraces it. No XLA (slower on CPU)."""
    tf = import_tensorflow()
    channels = int(model.inputs[0].shape[-1])
    spec = tf.TensorSpec([None, None, None, channels], tf.uint8, name=INPUT_NAME)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return fn, spec


def _spec(bundle_dir: Path) -> dict:
    return json.loads((Path(bundle_dir) / "params.json").read_text()).get("spec", {})


def input_size(bundle_dir: Path) -> tuple[int, int] | None:
    """params.json spec.input_size: (height, width) images are shrunk to; None in bundles
    from before the shard cache (their graph resized whatever it was given)."""
    size = _spec(bundle_dir).get("input_size")
    return (int(size[0]), int(size[1])) if size else None


class Predictor:
    """Class probabilities for raw images: `prepare` one, `predict` a batch.

    Attributes: labels (output index -> class name), channels (C of the input), size (the
    stored (height, width) images are shrunk to, or None), backend ("tf" or "onnx"),
    label_mode ("single": softmax, "multi": sigmoid), postprocess (the bundle's
    calibration.json, or None: the model's probabilities as they are, labels by argmax or
    at 0.5).
    """

    backend = ""
    label_mode = "single"
    postprocess: Postprocess | None = None

    def __init__(self, labels: list[str], channels: int, size: tuple[int, int] | None) -> None:
        self.labels, self.channels, self.size = list(labels), int(channels), size

    def prepare(self, image: "PILImage.Image | bytes | Path | str") -> np.ndarray:
        """uint8 [h, w, C] for a PIL image, encoded bytes or a file path."""
        if isinstance(image, bytes):
            image = PILImage.open(io.BytesIO(image))
        elif isinstance(image, (str, Path)):
            image = PILImage.open(image)
        return shrink(image, self.channels, self.size)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, K] served scores for uint8 [N, H, W, C] images of one size: the
        model's probabilities, temperature-scaled when the bundle is calibrated."""
        probs = self.model_probs(batch)
        return probs if self.postprocess is None else self.postprocess.scores(probs)

    def model_probs(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, K]: the model's own probabilities, before any calibration."""
        raise NotImplementedError

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """bool [N, K]: the labels predicted from `predict`'s scores [N, K], at the bundle's
        per-class cut-offs (multi-label and binary; else argmax, or 0.5 for multi-label)."""
        if self.postprocess is None:
            return decide(scores, self.label_mode)
        return self.postprocess.decide(scores)

    def predict_images(self, images: list[np.ndarray]) -> np.ndarray:
        """float32 [N, K] for uint8 [H, W, C] images; those of one size run as one batch."""
        if len(images) == 1:
            return self.predict(images[0][None])
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        probs = np.zeros((len(images), len(self.labels)), np.float32)
        for indices in by_shape.values():
            probs[indices] = self.predict(np.stack([images[i] for i in indices]))
        return probs


class TfPredictor(Predictor):
    """A Keras model (model.keras, or the one evaluate holds) through `inference_fn`."""

    backend = "tf"

    def __init__(self, model, labels: list[str], size: tuple[int, int] | None) -> None:
        super().__init__(labels, model.inputs[0].shape[-1], size)
        self.model = model
        self._fn = inference_fn(model)[0]

    def model_probs(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(batch))


class OnnxPredictor(Predictor):
    """A bundle's model.onnx on onnxruntime: one CPU session, ops run one after another,
    each on up to intra_op threads. A large call returns its memory when it ends (its arena
    shrinks), so one large request does not stay in the process."""

    backend = "onnx"

    def __init__(self, path: Path, labels: list[str], size, intra_op=1, inter_op=1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op
        options.inter_op_num_threads = inter_op
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        model_input = self.session.get_inputs()[0]  # "images", uint8 [N, H, W, C]
        self.input_name = model_input.name
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        super().__init__(labels, model_input.shape[-1], size)

    def model_probs(self, batch: np.ndarray) -> np.ndarray:
        large = len(batch) > SHRINK_IMAGES or batch.nbytes > SHRINK_BYTES
        feed = {self.input_name: np.ascontiguousarray(batch, np.uint8)}
        return self.session.run(None, feed, self._shrink if large else None)[0]


def configure_tensorflow(intra_op: int | None, inter_op: int | None):
    """Import TensorFlow quietly and size its thread pools (only before its first use:
    a later bundle in the same process keeps the first setting)."""
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op or 0)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op or 0)
    except RuntimeError:
        pass
    return tf


def resolve_backend(bundle_dir: Path, backend: str) -> str:
    """auto: onnx when the bundle has model.onnx, else tf."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "onnx" if (Path(bundle_dir) / "model.onnx").is_file() else "tf"
    return backend


def load(
    bundle_dir: Path | str,
    backend: str = "auto",
    intra_op: int | None = None,
    inter_op: int | None = None,
) -> Predictor:
    """The bundle's predictor, serving its calibration.json when it has one. Threads: onnx
    defaults to 1 and 1 (one request's model call is too small to split); tf to
    TensorFlow's own pools."""
    bundle_dir = Path(bundle_dir)
    labels = json.loads((bundle_dir / "labels.json").read_text())
    size = input_size(bundle_dir)
    postprocess = Postprocess.load(bundle_dir)
    if resolve_backend(bundle_dir, backend) == "onnx":
        onnx = bundle_dir / "model.onnx"
        predictor = OnnxPredictor(onnx, labels, size, intra_op or 1, inter_op or 1)
    else:
        configure_tensorflow(intra_op, inter_op)
        import keras

        model = keras.saving.load_model(bundle_dir / "model.keras", compile=False)
        predictor = TfPredictor(model, labels, size)
    predictor.label_mode = _spec(bundle_dir).get("label_mode", "single")
    predictor.postprocess = postprocess
    return predictor


def foreign_modules(code_dir: Path, packages: tuple[str, ...] = PROJECT_PACKAGES) -> list[str]:
    """Modules of `packages` loaded from anywhere but code_dir (must be none)."""
    code_dir = Path(code_dir).resolve()
    bad = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if name.split(".")[0] in packages and origin:
            if not Path(origin).resolve().is_relative_to(code_dir):
                bad.append(f"{name} from {origin}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="JSON list of image paths")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", choices=("tf", "onnx"), default="tf")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    predictor = load(args.bundle, args.backend)
    paths = json.loads(args.images.read_text())
    probs = {p: predictor.predict(predictor.prepare(p)[None])[0].tolist() for p in paths}
    result = {
        "backend": args.backend,
        "labels": predictor.labels,
        "channels": predictor.channels,
        "predictions": probs,
        "foreign_modules": foreign_modules(Path(__file__).parents[2]),
        "sys_path": sys.path,
    }
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
