"""(A bundle's code/ as exported before serving.load, kept to test that such bundles are
still served: tests/test_onnx.py.)

Predict with an exported bundle. The bundle's code/ carries this file and its imports.

A bundle is self-describing: model.keras, labels.json (output index -> class name) and
params.json. `Predictor` takes raw images of any size and mode (L, RGB, RGBA, CMYK, 16-bit,
palette, EXIF-rotated) and shrinks them exactly as the shard writer did for training and
evaluation (data_processing.images.shrink, to params.json spec.input_size).
`OnnxPredictor` does the same with the bundle's model.onnx (models/common/onnx_export.py) on
onnxruntime: it never imports TensorFlow, so a server that uses it loads in well under a
second and answers one small image in about 0.05 ms of model time (TF: about 0.8 ms).

Run (the deploy test does this in a clean process whose path holds only the bundle's code/):
    python -B -E -s models/runs/digits-cnn-base/bundle/code \
        --bundle models/runs/digits-cnn-base/bundle --images images.json --out predictions.json \
        [--backend tf|onnx]
"""

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.images import shrink
from models.common.quiet import import_tensorflow

PROJECT_PACKAGES = ("data_processing", "models", "deployment")


def prepare(
    image: "PILImage.Image | bytes | Path | str", channels: int, size: tuple[int, int] | None
) -> np.ndarray:
    """uint8 [h, w, channels] for a PIL image, encoded bytes or a file path: `shrink`ed to
    `size` (height, width), the stored size training and evaluation read."""
    if isinstance(image, bytes):
        image = PILImage.open(io.BytesIO(image))
    elif isinstance(image, (str, Path)):
        image = PILImage.open(image)
    return shrink(image, channels, size)


def input_size(bundle_dir: Path) -> tuple[int, int] | None:
    """params.json spec.input_size: (height, width) images are shrunk to; None in bundles
    from before the shard cache (their graph resized whatever it was given)."""
    spec = json.loads((Path(bundle_dir) / "params.json").read_text()).get("spec", {})
    size = spec.get("input_size")
    return (int(size[0]), int(size[1])) if size else None


def onnx_session(path: Path, intra_op: int = 1, inter_op: int = 1):
    """An onnxruntime CPU session for `path`: ops run one after another (sequential mode),
    each on up to intra_op threads; inter_op matters only in parallel mode."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = inter_op
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Predictor:
    """Load a bundle once; predict class probabilities for raw images (TensorFlow)."""

    def __init__(self, bundle_dir: Path) -> None:
        tf = import_tensorflow()
        import keras

        self.bundle_dir = Path(bundle_dir)
        self.labels: list[str] = json.loads((self.bundle_dir / "labels.json").read_text())
        self.model = keras.saving.load_model(self.bundle_dir / "model.keras", compile=False)
        self.channels = int(self.model.inputs[0].shape[-1])
        self.size = input_size(self.bundle_dir)
        spec = tf.TensorSpec([None, None, None, self.channels], tf.uint8)
        self._fn = tf.function(
            lambda x: self.model(x, training=False), input_signature=[spec], jit_compile=False
        )

    def prepare(self, image: "PILImage.Image | bytes | Path | str") -> np.ndarray:
        """Return uint8 [H, W, C] for a PIL image, encoded bytes or a file path."""
        return prepare(image, self.channels, self.size)

    def predict(self, image) -> np.ndarray:
        """Return class probabilities [K] for one raw image (any size and mode)."""
        return np.asarray(self._fn(self.prepare(image)[None]))[0]


class OnnxPredictor:
    """Load a bundle's model.onnx once; predict with onnxruntime, never importing TensorFlow.

    Args:
        bundle_dir: the bundle (model.onnx, labels.json).
        intra_op: threads per operator (1: the calling thread only, best for small batches).
        inter_op: threads across operators (unused in the sequential mode set here).
    """

    def __init__(self, bundle_dir: Path, intra_op: int = 1, inter_op: int = 1) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.labels: list[str] = json.loads((self.bundle_dir / "labels.json").read_text())
        self.session = onnx_session(self.bundle_dir / "model.onnx", intra_op, inter_op)
        model_input = self.session.get_inputs()[0]  # "images", uint8 [N, H, W, C]
        self.input_name = model_input.name
        self.channels = int(model_input.shape[-1])
        self.size = input_size(self.bundle_dir)

    def prepare(self, image: "PILImage.Image | bytes | Path | str") -> np.ndarray:
        """Return uint8 [H, W, C] for a PIL image, encoded bytes or a file path."""
        return prepare(image, self.channels, self.size)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Return float32 [N, K] for uint8 [N, H, W, C] images of one size."""
        feed = {self.input_name: np.ascontiguousarray(batch, np.uint8)}
        return self.session.run(None, feed)[0]

    def predict(self, image) -> np.ndarray:
        """Return class probabilities [K] for one raw image (any size and mode)."""
        return self.predict_batch(self.prepare(image)[None])[0]


def foreign_modules(code_dir: Path) -> list[str]:
    """Return project modules loaded from anywhere but code_dir (should be none)."""
    code_dir = code_dir.resolve()
    bad = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if name.split(".")[0] in PROJECT_PACKAGES and origin:
            if code_dir not in Path(origin).resolve().parents:
                bad.append(f"{name} from {origin}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="JSON list of image paths")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", choices=("tf", "onnx"), default="tf")
    args = parser.parse_args()
    predictor = (OnnxPredictor if args.backend == "onnx" else Predictor)(args.bundle)
    paths = json.loads(args.images.read_text())
    probs = {p: [float(v) for v in predictor.predict(p)] for p in paths}
    args.out.write_text(
        json.dumps(
            {
                "backend": args.backend,
                "labels": predictor.labels,
                "channels": predictor.channels,
                "predictions": probs,
                "foreign_modules": foreign_modules(Path(__file__).parents[2]),
                "sys_path": sys.path,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
