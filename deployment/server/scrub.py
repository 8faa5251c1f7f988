"""Uploads without their metadata, before the feedback store keeps them (feedback_store.py).

JPEG and PNG are rewritten losslessly: the pixel data is copied byte for byte, and every
segment or chunk that is not needed to decode it is dropped, which is what `jpegtran -copy
none` does. Gone: EXIF (GPS, camera, serial numbers, time), XMP, IPTC, ICC profiles, comments,
PNG text chunks (tEXt, zTXt, iTXt), embedded thumbnails, MPO's further frames and any bytes
after the image's end. Other formats (BMP, GIF, WebP, TIFF, ...) become a PNG made from their
decoded pixels (lossless too), with nothing but the pixels (and a palette's transparency).

Kept, because training must see the pixels the model saw:
  - EXIF orientation, when it is not 1: a new EXIF block holding that one tag, nothing else
    (data_processing/images.py turns images upright by it, as the served model did);
  - JPEG's JFIF header without its thumbnail, and Adobe's APP14 (it says how CMYK/YCCK
    colours are coded), neither of which holds anything about the picture's origin.
ICC profiles are dropped: neither training nor serving applies colour management (the model
reads the stored values as they are), and a profile can name the device that made it.

A rewritten file that Pillow cannot decode (a malformed upload the predictor still read) is
replaced by a PNG of its pixels.
"""

import io
import struct
import zlib

from PIL import Image as PILImage
from PIL import ImageOps

ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEEP = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}  # pixels, palette, transparency
SOI, EOI, SOS, APP0, APP1, APP14, COM = 0xD8, 0xD9, 0xDA, 0xE0, 0xE1, 0xEE, 0xFE
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers with no length
SCAN_ESCAPES = {0x00, *range(0xD0, 0xD8)}  # 0xFF then these, within entropy-coded data
JFIF = b"JFIF\x00"


class Unreadable(ValueError):
    """Pillow cannot read the upload, so it cannot be stored."""


def clean(data: bytes) -> tuple[bytes, str]:
    """(bytes, extension) of the upload `data` with no metadata: .jpg, .png.

    Raises:
        Unreadable: Pillow cannot decode `data`.
    """
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            fmt, orientation = im.format, _orientation(im)
        if fmt in ("JPEG", "MPO"):
            out, ext = _jpeg(data, orientation), ".jpg"
        elif fmt == "PNG":
            out, ext = _png(data, orientation), ".png"
        else:
            return _repaint(data), ".png"
        _check(out)
        return out, ext
    except (ValueError, IndexError, OSError, SyntaxError, struct.error):
        pass
    try:
        return _repaint(data), ".png"
    except Exception as err:  # noqa: BLE001 - whatever Pillow raises on crafted bytes
        raise Unreadable(f"{type(err).__name__}: {err}") from None


def _orientation(im: PILImage.Image) -> int:
    try:
        value = im.getexif().get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: treat the image as upright
        return 1
    return value if value in range(2, 9) else 1


def _exif(orientation: int) -> bytes:
    """A TIFF-format EXIF block with the one orientation tag (without the b"Exif\\0\\0")."""
    exif = PILImage.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()[6:]


def _jpeg(data: bytes, orientation: int) -> bytes:
    """The first image of a JPEG (or MPO), with only the segments decoding needs."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out = [b"\xff\xd8"]
    if orientation != 1:
        block = b"Exif\x00\x00" + _exif(orientation)
        out.append(struct.pack(">BBH", 0xFF, APP1, len(block) + 2) + block)
    pos = 2
    while True:
        while data[pos] == 0xFF and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at {pos}")
        marker = data[pos + 1]
        if marker == EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in STANDALONE:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if end > len(data) or length < 2:
            raise ValueError("truncated JPEG segment")
        body = data[pos + 4 : end]
        if marker == APP0 and body.startswith(JFIF) and len(body) >= 12:
            header = body[:12] + b"\x00\x00"  # version, units, density; no thumbnail
            out.append(struct.pack(">BBH", 0xFF, APP0, len(header) + 2) + header)
        elif marker == APP14 and body.startswith(b"Adobe"):
            out.append(data[pos:end])
        elif not (APP0 <= marker <= 0xEF or marker == COM):
            out.append(data[pos:end])  # tables, frame and scan headers
        pos = end
        if marker == SOS:  # entropy-coded data runs to the next marker that is not RSTn
            scan = pos
            while True:
                pos = data.index(b"\xff", pos)  # ValueError at the end of the data
                if data[pos + 1] not in SCAN_ESCAPES:
                    break
                pos += 2
            out.append(data[scan:pos])


def _png(data: bytes, orientation: int) -> bytes:
    """The PNG with only IHDR, PLTE, tRNS, IDAT and IEND (and an orientation-only eXIf)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind == b"IDAT" and orientation != 1:
            out.append(_chunk(b"eXIf", _exif(orientation)))
            orientation = 1  # once, before the first IDAT
        if kind in PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    raise ValueError("PNG without IEND")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _repaint(data: bytes) -> bytes:
    """A PNG of the first frame's pixels, upright, with no metadata at all."""
    with PILImage.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        keep = {"transparency": im.info["transparency"]} if "transparency" in im.info else {}
        im.info = {}  # Pillow writes icc_profile, exif and text from info otherwise
        out = io.BytesIO()
        im.save(out, format="PNG", **keep)
        return out.getvalue()


def _check(data: bytes) -> None:
    """Raise unless Pillow decodes `data` (a JPEG at 1/8 scale: cheap)."""
    with PILImage.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
