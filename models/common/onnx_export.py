"""Convert a bundle's Keras model to ONNX and check it against TensorFlow on real images.

models/export.py writes `model.onnx` beside model.keras with `export_onnx`; the server runs it
with onnxruntime alone (models/common/serving.py `OnnxPredictor`), so serving needs no
TensorFlow. The graph is `serving.inference_fn`, the tf.function `TfPredictor` runs: the Keras
model with training=False on uint8 [N, H, W, C] "images" (any N, H, W), opset 17.

The check runs on the cell's stored test images (datasets/shards/<dataset>/, the first
CHECK_IMAGES: exactly what `prepare` gives the model for those raw files), once as one batch
and once one image at a time (a served request is usually a batch of one), and fails unless
the two are the same model by data_processing.core.agreement (float32's rounding allowed,
top-1 labels equal).
"""

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from data_processing.core.agreement import Agreement, compare
from data_processing.core.errors import CheckError, DataError
from models.common import canonical
from models.common.serving import OnnxPredictor, TfPredictor, inference_fn

OPSET = 17
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
    canonical.onnx_file(path)  # the same bytes for the same model (common/canonical.py)


def agreement(model, path: Path, images: np.ndarray) -> Agreement:
    """How far onnxruntime's probabilities are from TensorFlow's over `images`, run as one
    batch and one image at a time."""
    labels = [str(k) for k in range(int(model.outputs[0].shape[-1]))]
    tf_predictor = TfPredictor(model, labels, None)
    onnx_predictor = OnnxPredictor(path, labels, None)
    expected, found = [], []
    for batch in [images, *(images[i : i + 1] for i in range(len(images)))]:
        expected.append(tf_predictor.predict(batch))
        found.append(onnx_predictor.predict(batch))
        if found[-1].shape != expected[-1].shape:
            shape = str(list(found[-1].shape))
            raise CheckError(path, f"outputs of shape {list(expected[-1].shape)}", found=shape)
    return compare(np.concatenate(expected), np.concatenate(found))


def export_onnx(model, path: Path, images: np.ndarray) -> dict:
    """Convert `model` to `path` and check it on `images`.

    Args:
        model: the Keras model (its input is uint8 [N, H, W, C]).
        path: where to write model.onnx.
        images: uint8 [N, H, W, C] real images of the dataset's own size.

    Returns:
        The lineage record: {"sha256", "max_abs_diff", "tolerance_used", "label_agreement",
        "rtol", "atol", "opset", "checked_images"}.

    Raises:
        CheckError: onnxruntime's outputs are not TensorFlow's (agreement.compare).
    """
    convert(model, path)
    found = agreement(model, path, images)
    if not found.passed:
        raise CheckError(
            path,
            "onnxruntime outputs equal to TensorFlow's within float32 rounding, with the "
            "same top-1 labels",
            found=f"{found.describe()} ({len(images)} test images, as one batch and alone)",
            hint="tf2onnx converted an op differently; the bundle is not written",
        )
    return {
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        **found.record(),
        "rtol": found.rtol,
        "atol": found.atol,
        "opset": OPSET,
        "checked_images": len(images),
    }
