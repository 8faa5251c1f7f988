"""Shared by every endpoint: the JSON error type, image decoding with limits, batched predict.

Images arrive as encoded bytes (PNG/JPEG/...) or as uint8 arrays. Encoded bytes go through
the bundle's own `Predictor.prepare` (its copy of data_processing.images.to_array), so any
size and mode is converted exactly as training did; the model resizes inside its graph.
"""

import io

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an exact HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def pinned(request):
    """The bundle pinned to a Starlette request on arrival (serve.Lifecycle); None before
    the first load. Every route serves with it, so a hot reload never switches the model
    under a request in flight."""
    return request.scope.get("state", {}).get("bundle")


def decode_image(data: bytes, bundle, max_pixels: int) -> np.ndarray:
    """Decode one encoded image to uint8 [H, W, C] for `bundle`.

    Raises:
        ApiError: 400 for bytes that are not a complete image or cannot be converted (any
            decoder error is the client's bytes, never a 500), 413 above max_pixels
            (checked from the header, before the pixels are decompressed).
    """
    if not data:
        raise ApiError(400, "empty image")
    try:
        im = PILImage.open(io.BytesIO(data))  # reads the header only
        width, height = im.size
        if width * height > max_pixels:
            raise ApiError(413, f"image {width}x{height} is over {max_pixels} pixels")
        im.load()  # a truncated file raises OSError here
    except ApiError:
        raise
    except PILImage.DecompressionBombError as err:  # over 2x PIL.Image.MAX_IMAGE_PIXELS
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not a decodable image (PNG, JPEG, BMP, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ApiError(400, f"truncated or corrupt image: {err}") from None
    except Exception as err:  # PIL plugins raise what they like on crafted bytes
        raise ApiError(400, f"corrupt image: {type(err).__name__}: {err}") from None
    try:
        return bundle.prepare(im)
    except Exception as err:  # a mode or layout the bundle's to_array cannot convert
        raise ApiError(400, f"cannot convert the {im.mode} image: {err}") from None


def predict_arrays(bundle, images: list[np.ndarray]) -> np.ndarray:
    """float32 [N, K] for uint8 [H, W, C] images; images of one size run as one batch."""
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    probs = np.zeros((len(images), len(bundle.labels)), np.float32)
    for indices in by_shape.values():
        probs[indices] = bundle.predict(np.stack([images[i] for i in indices]))
    return probs


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[float, int, str]]]:
    """For each row of probs [N, K]: the k best (score, index, label), best first."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(float(row[j]), int(j), labels[j]) for j in idx]
        for row, idx in zip(probs, order, strict=True)
    ]
