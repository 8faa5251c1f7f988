"""The one inference sequence, for v2 infer, v1 predict, /predict and /explain:

    read the images (decode encoded files within the budget, or take a pixels tensor)
    -> the model threads (batcher.py: the bundle's predictor, with its calibration)
    -> the out-of-distribution screen (ood.py; 422 over --ood-threshold)
    -> the prediction metrics (telemetry.py)

Encoded files go through the bundle's own `Predictor.prepare` (its copy of
data_processing.images.shrink: JPEG draft decoding, EXIF, mode, resize), so a served file
reaches the model as the pixels training saw. Decoding runs in a worker thread, at most
`slots` images at once across requests, one at a time per request, after the request's
image count, pixels and model input passed the budget (budget.py), all read from the image
headers before a pixel is decoded.
"""

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from deployment.server.budget import Budget
from deployment.server.errors import ApiError, out_of_memory


@dataclass
class Inputs:
    """A request's images as sent: encoded files, or uint8 [H, W, C] arrays of a tensor."""

    encoded: list[bytes] | None = None
    arrays: list[np.ndarray] | None = None


@dataclass
class Prediction:
    scores: np.ndarray  # float32 [N, K]: the bundle's served scores
    images: list[np.ndarray]  # uint8 [h, w, C]: what the model was given
    ood: list[dict] | None  # each image's {"score", "reasons"}; None without input_stats
    headers: list = field(default_factory=list)  # (width, height, mode) per encoded file


async def predict(state, bundle, inputs: Inputs) -> Prediction:
    """Run the sequence for one request's `inputs` on its pinned `bundle`; state is
    lifecycle.State (its budget, batcher, metrics and OOD threshold)."""
    headers: list = []
    if inputs.encoded is not None:
        images = await run_in_threadpool(
            decode_images, inputs.encoded, bundle, state.budget, headers
        )
    else:
        images = inputs.arrays
    scores = await state.batcher.predict(bundle.predictor, images)
    ood = state.screen(bundle, images, scores, headers)
    state.metrics.observe_predictions(scores, bundle)
    return Prediction(scores, images, ood, headers)


def decode_images(
    items: list[bytes], bundle, budget: Budget, headers: list | None = None
) -> list[np.ndarray]:
    """Decode a request's encoded images to uint8 [h, w, C] for `bundle`; when `headers` is
    given, append each image's (width, height, mode) from its header to it (the OOD score's).

    Raises:
        ApiError: 413 over the budget (images, pixels as sent, model input: all before any
            pixel is decoded); 400 for bytes that are not a complete image or cannot be
            converted (any decoder error is the client's bytes, never a 500); 503 when the
            server runs out of memory.
    """
    budget.model_input(len(items), None, bundle)  # the count first: no header is read yet
    opened = [_header(data) for data in items]
    budget.sent_pixels([im.size for im in opened])
    if headers is not None:
        headers.extend((*im.size, im.mode) for im in opened)
    arrays = []
    for n, im in enumerate(opened):
        opened[n] = None  # each decoded image is let go before the next is decoded
        with budget.slot():
            arrays.append(_decode(im, bundle))
    return arrays


def _header(data: bytes) -> PILImage.Image:
    """The image with only its header read (400 when it is not an image)."""
    if not data:
        raise ApiError(400, "empty image")
    try:
        return PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as err:  # over 2x PIL.Image.MAX_IMAGE_PIXELS
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not a decodable image (PNG, JPEG, BMP, GIF, ...)") from None
    except MemoryError:
        raise out_of_memory() from None
    except Exception as err:  # PIL plugins raise what they like on crafted bytes
        raise ApiError(400, f"corrupt image: {type(err).__name__}: {err}") from None


def _decode(im: PILImage.Image, bundle) -> np.ndarray:
    """The bundle's prepare: it decodes (JPEG draft first), so no full-size load comes
    before it."""
    try:
        return bundle.predictor.prepare(im)
    except MemoryError:
        raise out_of_memory() from None
    except PILImage.DecompressionBombError as err:
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except (OSError, SyntaxError) as err:  # a truncated file raises OSError on load
        raise ApiError(400, f"truncated or corrupt image: {err}") from None
    except Exception as err:  # crafted bytes, or a mode the bundle cannot convert
        raise ApiError(400, f"cannot decode the {im.mode} image: {err}") from None


def decide_labels(probs: np.ndarray, bundle) -> list[str]:
    """The classes the bundle predicts for one image's scores [1, K]: at its per-class
    cut-offs (calibration.json, the bundle's `decide`)."""
    return [bundle.labels[int(k)] for k in np.flatnonzero(bundle.predictor.decide(probs)[0])]


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[float, int, str]]]:
    """For each row of probs [N, K]: the k best (score, index, label), best first."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(float(row[j]), int(j), labels[j]) for j in idx]
        for row, idx in zip(probs, order, strict=True)
    ]
