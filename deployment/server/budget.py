"""What one request may make the server hold: its budget, checked before the memory is taken.

A request is bounded four ways, each with its flag (and params.yaml `serve:` key):
    --max-body-bytes    the bytes sent (checked on the Content-Length, then as they arrive)
    --max-json-values   the JSON it sends, by its commas and brackets: parsing is one C call
                        that holds the GIL, so its cost, not its bytes, must be bounded
                        (5 million empty lists are 14 MB and take 2 s to parse)
    --max-images        the images in it
    --max-pixels        the pixels its encoded images hold as sent, read from their headers
                        before anything is decoded: the decoders' memory
    --max-input-mib     the model input it makes: n x H x W x C float32 values, H x W the
                        larger of what the image is resized to (the bundle's stored size, the
                        model's own input size) and, for a pixels tensor, the size sent (the
                        graph casts it to float before resizing). This is what the model
                        call's memory grows with, with --max-images for small images, whose
                        activations (not their input) are what fills memory.
Over any of them: 413, naming the count, the budget and the flag. At most `slots` images
decode at once across requests, so decoding holds at most slots x max_pixels.

The defaults keep one request's model input under 64 MiB and its JSON parse under about 20
ms on a 2-core machine (bench/README.md, server_memory and health).
"""

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from deployment.server.errors import ApiError

FLOAT32 = 4


@dataclass(frozen=True)
class Limits:
    """The per-request budget (the module doc); the server's flags set it."""

    max_body_bytes: int = 16 << 20  # 16 MiB: a few large photos, base64 included
    max_json_values: int = 1 << 20  # commas and brackets in a JSON body
    max_images: int = 256
    max_pixels: int = 40_000_000  # sent pixels a request; also PIL.Image.MAX_IMAGE_PIXELS
    max_input_mib: float = 64.0  # float32 model input a request


class Budget:
    """A server's Limits, and the decode slots shared by its requests."""

    def __init__(self, limits: Limits, slots: int) -> None:
        self.limits = limits
        self.max_input_bytes = int(limits.max_input_mib * 2**20)
        self._slots = threading.BoundedSemaphore(max(1, slots))

    @property
    def max_pixels(self) -> int:
        return self.limits.max_pixels

    @contextmanager
    def slot(self):
        """One of the decode slots, held while an image decodes."""
        with self._slots:
            yield

    def json(self, body: bytes) -> None:
        """413 when parsing `body` could cost more than the budget allows: its commas and
        brackets (bytes.count is memchr-fast) bound orjson's work before it starts."""
        values = body.count(b",") + body.count(b"[") + body.count(b"{")
        if values > self.limits.max_json_values:
            raise ApiError(
                413,
                f"the JSON body holds {values:,} values and brackets, over this server's "
                f"budget of {self.limits.max_json_values:,} (--max-json-values); send "
                "pixels as a flat list, images as BYTES, or use the binary tensor extension",
            )

    def images(self, count: int) -> None:
        """413 when a request holds more images than --max-images."""
        if count > self.limits.max_images:
            raise ApiError(
                413,
                f"the request holds {count:,} images, over this server's budget of "
                f"{self.limits.max_images:,} images a request (--max-images)",
            )

    def model_input(self, count: int, sent: tuple[int, int] | None, bundle) -> None:
        """413 when `count` images, sent at (h, w) (None: encoded, prepared to the bundle's
        size), make more float32 model input than --max-input-mib."""
        self.images(count)
        area = max(_area(getattr(bundle, "input_size", None)), _area(bundle.model_size))
        if sent is not None:
            area = max(area, sent[0] * sent[1])
        size = count * area * bundle.channels * FLOAT32
        if size > self.max_input_bytes:
            raise ApiError(
                413,
                f"the request's {count:,} images make {size / 2**20:,.1f} MiB of model input "
                f"({count:,} x {area:,} pixels x {bundle.channels} x float32), over this "
                f"server's budget of {self.limits.max_input_mib:g} MiB a request "
                "(--max-input-mib)",
            )

    def sent_pixels(self, sizes: list[tuple[int, int]]) -> None:
        """413 when encoded images of (width, height) `sizes` hold more than --max-pixels."""
        total = sum(w * h for w, h in sizes)
        if total > self.max_pixels:
            shown = ", ".join(f"{w}x{h}" for w, h in sizes[:3])
            more = f" and {len(sizes) - 3} more" if len(sizes) > 3 else ""
            raise ApiError(
                413,
                f"the request's images hold {total:,} pixels ({shown}{more}), over this "
                f"server's budget of {self.max_pixels:,} pixels a request (--max-pixels)",
            )


def _area(size) -> int:
    return math.prod(size) if size else 0
