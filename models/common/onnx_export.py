"""Convert a bundle's Keras model to ONNX and check it against TensorFlow on real images.

models/export.py writes `model.onnx` beside model.keras with `export_onnx`; the server runs it
with onnxruntime alone (models/common/serving.py `OnnxPredictor`), so serving needs no
TensorFlow. The graph is `serving.inference_fn`, the tf.function `TfPredictor` runs: the Keras
model with training=False on uint8 [N, H, W, C] "images" (any N, H, W), opset 17.

The check runs on the cell's stored test images (datasets/shards/<dataset>/, the first
CHECK_IMAGES: exactly what `prepare` gives the model for those raw files), once as one batch
and once one image at a time (a served request is usually a batch of one), and fails when any
probability differs by more than ATOL.
"""

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from data_processing.core.errors import CheckError, DataError
from models.common.serving import OnnxPredictor, TfPredictor, inference_fn

OPSET = 17
ATOL = 1e-5  # float32 kernels differ in summation order; 1e-6 is typical, 1e-5 the limit
CHECK_IMAGES = 64


def load_check_images(shards_dir: Path, n: int = CHECK_IMAGES) -> np.ndarray:
    """The first n stored test images, uint8 [n, h, w, C] (DataError if there are none)."""
    from models.common.data import Shards

    shards = Shards.open(shards_dir)
    count = shards.count("test")
    if not count:
        raise DataError(shards_dir, "test images for the ONNX check", found="none")
    return shards.images("test", range(min(n, count)))


def convert(model, path: Path, opset: int = OPSET) -> None:
    """Write `model` (Keras, inference mode) to `path` as ONNX with uint8 input "images"."""
    fn, spec = inference_fn(model)
    os.environ.setdefault("TF2ONNX_LOG_LEVEL", "ERROR")
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # per-op INFO lines otherwise
    tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset, output_path=str(path))


def max_difference(model, path: Path, images: np.ndarray) -> float:
    """The largest |TF - onnxruntime| probability over `images`, run as one batch and one
    image at a time."""
    labels = [str(k) for k in range(int(model.outputs[0].shape[-1]))]
    tf_predictor = TfPredictor(model, labels, None)
    onnx_predictor = OnnxPredictor(path, labels, None)
    diff = 0.0
    for batch in [images, *(images[i : i + 1] for i in range(len(images)))]:
        expected = tf_predictor.predict(batch)
        found = onnx_predictor.predict(batch)
        if found.shape != expected.shape:
            raise CheckError(
                path, f"outputs of shape {list(expected.shape)}", found=str(list(found.shape))
            )
        diff = max(diff, float(np.abs(found - expected).max()))
    return diff


def export_onnx(model, path: Path, images: np.ndarray, atol: float = ATOL) -> dict:
    """Convert `model` to `path` and check it on `images`.

    Args:
        model: the Keras model (its input is uint8 [N, H, W, C]).
        path: where to write model.onnx.
        images: uint8 [N, H, W, C] real images of the dataset's own size.
        atol: the largest allowed difference between TF and onnxruntime probabilities.

    Returns:
        The lineage record: {"sha256", "max_abs_diff", "opset", "checked_images"}.

    Raises:
        DataError: the ONNX outputs differ from TensorFlow's by more than atol.
    """
    convert(model, path)
    diff = max_difference(model, path, images)
    if not diff <= atol:  # also catches NaN
        raise CheckError(
            path,
            f"onnxruntime outputs within {atol:g} of TensorFlow's",
            found=f"a max abs difference of {diff:.3g} over {len(images)} test images",
            hint="tf2onnx converted an op differently; the bundle is not written",
        )
    return {
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "max_abs_diff": float(f"{diff:.3g}"),
        "opset": OPSET,
        "checked_images": len(images),
    }
