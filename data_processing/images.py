"""Image helpers on files and on arrays: header reads, full decodes, mode conversion.

The bundle's serving code carries a copy of this module, so training and serving convert
images to arrays in exactly the same way.
"""

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from data_processing.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
PILImage.MAX_IMAGE_PIXELS = 64_000_000  # larger images raise: a decompression-bomb guard


def is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def read_header(path: Path) -> tuple[int, int, str]:
    """Return (width, height, mode) from the header only, without decoding the pixels.

    Raises:
        DataError: the file is missing or not a readable image.
    """
    try:
        with PILImage.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1) if im.format == "JPEG" else 1
            if orientation in (5, 6, 7, 8):  # EXIF rotations by 90 degrees swap the sides
                width, height = height, width
            return width, height, im.mode
    except FileNotFoundError:
        raise DataError(path, "an image file", found="no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(path, "a readable PNG, JPEG, BMP or GIF image", found=str(err)) from None
    except PILImage.DecompressionBombError as err:
        raise DataError(path, "an image under the pixel limit", found=str(err)) from None


def channels_for(modes: set[str]) -> int:
    """Return 1 when every mode is grayscale, else 3."""
    return 1 if modes and all(m in GRAY_MODES for m in modes) else 3


def to_array(im: PILImage.Image, channels: int) -> np.ndarray:
    """Convert a PIL image to uint8 [H, W, channels], upright; 16-bit is scaled, not clipped."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "I" or arr.max() > 255 else 255.0
        gray = PILImage.fromarray(np.round(arr * 255.0 / top).astype(np.uint8), "L")
        im = gray if channels == 1 else gray.convert("RGB")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        im = im.convert(target)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def decode(path: Path, channels: int) -> np.ndarray:
    """Fully decode an image file to uint8 [H, W, channels] (DataError if unreadable/truncated)."""
    try:
        with PILImage.open(path) as im:
            im.load()
            return to_array(im, channels)
    except FileNotFoundError:
        raise DataError(path, "an image file", found="no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(path, "a complete, decodable image", found=str(err)) from None
    except PILImage.DecompressionBombError as err:
        raise DataError(path, "an image under the pixel limit", found=str(err)) from None
