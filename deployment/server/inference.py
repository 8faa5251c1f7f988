"""Shared by every endpoint: the JSON error type and response, image decoding with limits,
top-k.

Images arrive as encoded bytes (PNG/JPEG/...) or as uint8 arrays. Encoded bytes go through
the bundle's own `Predictor.prepare` (its copy of data_processing.images.shrink: JPEG draft
decoding, EXIF, mode, resize), so a served file reaches the model as the pixels training saw.

Memory is bounded by `DecodeLimits`: a request's images may hold at most `max_pixels` in all
(read from their headers before any pixel is decoded; 413 over it), and at most `slots`
images decode at once, one at a time per request, so decoding holds at most `slots` images
of at most `max_pixels` each, whatever clients send.
"""

import io
import json
import threading
from contextlib import contextmanager

import numpy as np
import orjson
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from starlette import responses


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an exact HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JSONResponse(responses.JSONResponse):
    """Starlette's JSONResponse, rendered by orjson (several times faster than json.dumps);
    what orjson refuses (a lone surrogate that a client's JSON escaped, an int over 64 bits)
    falls back to json.dumps with ASCII escapes, never a 500."""

    def render(self, content) -> bytes:
        return dumps(content)


def dumps(content) -> bytes:
    """`content` as compact JSON bytes (JSONResponse's rendering); NaN is null."""
    try:
        return orjson.dumps(content)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(content, separators=(",", ":")).encode()


def pinned(request):
    """The bundle pinned to a Starlette request on arrival (serve.Lifecycle); None before
    the first load. Every route serves with it, so a hot reload never switches the model
    under a request in flight."""
    return request.scope.get("state", {}).get("bundle")


class DecodeLimits:
    """A per-request budget of pixels and a bound on images decoding at once."""

    def __init__(self, max_pixels: int, slots: int) -> None:
        self.max_pixels = max_pixels
        self._slots = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self):
        with self._slots:
            yield


def decode_images(
    items: list[bytes], bundle, limits: DecodeLimits, headers: list | None = None
) -> list[np.ndarray]:
    """Decode a request's encoded images to uint8 [h, w, C] for `bundle`; when `headers` is
    given, append each image's (width, height, mode) from its header to it (the
    out-of-distribution score's, deployment/server/ood.py).

    Raises:
        ApiError: 400 for bytes that are not a complete image or cannot be converted (any
            decoder error is the client's bytes, never a 500); 413 when the images hold more
            than limits.max_pixels in all (from their headers, before decoding); 503 when
            the server runs out of memory (the server's state, not the client's fault).
    """
    opened = [_header(data) for data in items]
    total = sum(im.size[0] * im.size[1] for im in opened)
    if total > limits.max_pixels:
        sizes = ", ".join(f"{im.size[0]}x{im.size[1]}" for im in opened[:3])
        more = f" and {len(opened) - 3} more" if len(opened) > 3 else ""
        raise ApiError(
            413,
            f"the request's images hold {total:,} pixels ({sizes}{more}), over this "
            f"server's budget of {limits.max_pixels:,} pixels a request (--max-pixels)",
        )
    if headers is not None:
        headers.extend((*im.size, im.mode) for im in opened)
    arrays = []
    for n, im in enumerate(opened):
        opened[n] = None  # each decoded image is let go before the next is decoded
        with limits.slot():
            arrays.append(_decode(im, bundle))
    return arrays


def decode_image(data: bytes, bundle, limits: DecodeLimits, headers=None) -> np.ndarray:
    """`decode_images` for one image."""
    return decode_images([data], bundle, limits, headers)[0]


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
        raise ApiError(503, "the server is out of memory; retry later") from None
    except Exception as err:  # PIL plugins raise what they like on crafted bytes
        raise ApiError(400, f"corrupt image: {type(err).__name__}: {err}") from None


def _decode(im: PILImage.Image, bundle) -> np.ndarray:
    """The bundle's prepare: it decodes (JPEG draft first), so no full-size load comes
    before it."""
    try:
        return bundle.predictor.prepare(im)
    except MemoryError:
        raise ApiError(503, "the server is out of memory; retry later") from None
    except PILImage.DecompressionBombError as err:
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except (OSError, SyntaxError) as err:  # a truncated file raises OSError on load
        raise ApiError(400, f"truncated or corrupt image: {err}") from None
    except Exception as err:  # crafted bytes, or a mode the bundle cannot convert
        raise ApiError(400, f"cannot decode the {im.mode} image: {err}") from None


def decide_labels(probs: np.ndarray, bundle) -> list[str]:
    """The classes the bundle predicts for one image's scores [1, K]: at its per-class cut-offs
    (calibration.json, the bundle's `decide`), so binary and multi-label use what evaluate
    picked on the validation split. A bundle from before the cut-offs has no `decide`: its
    argmax (a single-label model's answer)."""
    decide = getattr(bundle.predictor, "decide", None)
    if decide is None:
        return [bundle.labels[int(np.argmax(probs[0]))]]
    return [bundle.labels[int(k)] for k in np.flatnonzero(decide(probs)[0])]


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[float, int, str]]]:
    """For each row of probs [N, K]: the k best (score, index, label), best first."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(float(row[j]), int(j), labels[j]) for j in idx]
        for row, idx in zip(probs, order, strict=True)
    ]
