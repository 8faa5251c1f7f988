"""Image helpers: the fast PNG header read agrees with Pillow; modes convert as training does."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_processing.core.errors import DataError
from data_processing.images import _png_header, decode, read_header, read_mode, to_array

MODES = ["1", "L", "I;16", "RGB", "RGBA", "P", "LA"]


@pytest.mark.parametrize("mode", MODES)
def test_png_header_matches_pillow(mode: str, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new(mode, (13, 7)).save(path)
    with Image.open(path) as im:
        expected = (*im.size, im.mode)
    assert _png_header(path) == expected == read_header(path)


def test_non_png_falls_back_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "x.JPG"  # upper-case extension
    Image.new("RGB", (5, 9)).save(path, format="JPEG")
    assert _png_header(path) is None and read_header(path) == (5, 9, "RGB")


def test_corrupt_header_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("L", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # width byte: the IHDR checksum no longer matches
    path.write_bytes(bytes(data))
    assert _png_header(path) is None
    with pytest.raises(DataError, match="x.png"):
        read_header(path)


def test_sixteen_bit_scales_not_clips() -> None:
    im = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).convert("I;16")
    assert to_array(im, 1)[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1"])
def test_to_array_channels(mode: str) -> None:
    im = Image.new(mode, (6, 4))
    assert to_array(im, 1).shape == (4, 6, 1) and to_array(im, 3).shape == (4, 6, 3)
    assert to_array(im, 3).dtype == np.uint8


def test_truncated_png_fails_decode(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:80])
    assert read_header(path) == (32, 32, "L")  # the header alone looks fine
    with pytest.raises(DataError, match="complete, decodable image"):
        decode(path, 1)


@pytest.mark.parametrize(("orientation", "size"), [(1, (5, 9)), (3, (5, 9)), (6, (9, 5))])
def test_exif_rotated_jpeg_header_is_upright(orientation: int, size: tuple, tmp_path: Path):
    path = tmp_path / "rotated.JPEG"
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: stored sideways, shown rotated 90 degrees clockwise
    Image.new("RGB", (5, 9)).save(path, format="JPEG", exif=exif)
    assert read_header(path)[:2] == size
    assert decode(path, 3).shape == (size[1], size[0], 3)  # decode agrees: upright pixels


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
@pytest.mark.parametrize("progressive", [False, True])
def test_read_mode_from_the_jpeg_frame_header_agrees_with_pillow(
    tmp_path: Path, mode: str, progressive: bool
) -> None:
    path = tmp_path / "x.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # an APP1 segment before the frame header
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, "JPEG", progressive=progressive, exif=exif)
    with Image.open(path) as im:
        assert read_mode(path) == im.mode == mode
    path.write_bytes(b"\xff\xd8" + b"\xff\xe1\x00\x04xx" * 3)  # no frame header: Pillow decides
    with pytest.raises(DataError, match="x.jpg"):
        read_mode(path)
