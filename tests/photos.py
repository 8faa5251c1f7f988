"""Realistic photo datasets in the seed folder format, for tests and benchmarks.

`write_photo_dataset(root, n)` writes `root/train/`, `root/test/` (images) and a
`groundtruth.csv` (`filename,label`) per split, as datasets/FORMAT.md describes and
data_processing/sources/seed.py reads. Each image is an ordinary photo-like picture (smooth
colour gradient, soft blotches of light, sensor noise) with one class pattern drawn on a random
patch at a random position and scale, in random colours. The classes differ by shape,
orientation or stripe direction, never by hue alone, and the pattern always has a luminance
contrast of 80+ grey levels against its background: grayscale images carry the class too.
Sides are drawn independently, so aspect ratios vary widely; the patch scales with each side,
so a bilinear resize of the whole upright image to 64x64 or 96x96 keeps the pattern readable.

    class         pattern on the patch (u, v: patch coordinates in 0..1)
    hstripes      horizontal stripes, 2.5-4 periods
    vstripes      vertical stripes
    diagonal      "/" stripes
    antidiagonal  "\\" stripes
    disc          filled ellipse
    ring          annulus
    square        filled rectangle
    cross         plus sign
    checker       3x3 or 4x4 checkerboard
    triangle      filled triangle, apex up

With `texture=True` the pattern fills the whole picture (a texture, not an object); with
`gray=True` every image is a grayscale JPEG and `modes` is ignored.

Most images are RGB JPEGs (quality 85-90). With `modes=True` (the default) a few % each are
real-world oddities: grayscale JPEG (L), RGBA PNG, palette PNG (P, half of them with a
transparent index), CMYK JPEG, 16-bit grayscale PNG (I;16) and JPEGs with EXIF Orientation 3,
6 or 8, whose stored pixels are rotated so that `PIL.ImageOps.exif_transpose` gives the
upright picture; two images (when n >= 20) have a side of only 32 pixels. `large=k` gives k
images both sides in 2000..4000 pixels.

Deterministic: the same arguments write the same bytes, whatever `workers` is (every image
draws from its own generator, seeded by (seed, index)). The split is stratified per class.
File names are `<split>/c<class>_<index>.<ext>`, plain ASCII and unique.

CLI (from the repository root; tests/ has no __init__.py, `tests` is a namespace package):
    .venv/bin/python -m tests.photos OUT_DIR --n 1000 [--seed 0] [--large 0] [--workers N]
                                     [--classes 10] [--min-side 32] [--max-side 480]
                                     [--test-fraction 0.2] [--no-modes]
"""

import argparse
import csv
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops

CLASS_NAMES = (
    "hstripes",
    "vstripes",
    "diagonal",
    "antidiagonal",
    "disc",
    "ring",
    "square",
    "cross",
    "checker",
    "triangle",
)
# kind -> (share of the images when modes is on, extension, stored PIL mode, EXIF orientation)
KINDS: dict[str, tuple[float, str, str, int]] = {
    "rgb": (0.0, "jpg", "RGB", 1),  # the rest
    "gray": (0.04, "jpg", "L", 1),
    "rgba": (0.03, "png", "RGBA", 1),
    "palette": (0.02, "png", "P", 1),
    "palette_transparent": (0.02, "png", "P", 1),
    "cmyk": (0.02, "jpg", "CMYK", 1),
    "gray16": (0.02, "png", "I;16", 1),
    "exif3": (0.02, "jpg", "RGB", 3),
    "exif6": (0.02, "jpg", "RGB", 6),
    "exif8": (0.02, "jpg", "RGB", 8),
}
# How an upright picture is stored so that PIL.ImageOps.exif_transpose turns it back: the
# inverse of exif_transpose's own turn (orientation 6 is undone by ROTATE_270, a clockwise
# quarter turn, so it is stored turned a quarter anticlockwise: ROTATE_90)
STORE_TURNS = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
TINY_SIDE = 32
LARGE_SIDES = (2000, 4000)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Spec(NamedTuple):
    """One image to write: everything drawn up front, so the files do not depend on workers."""

    index: int
    split: str
    label: int
    kind: str
    height: int  # upright
    width: int
    quality: int  # JPEG quality
    path: str  # absolute, to write
    texture: bool = False  # the pattern fills the whole picture


def _colour(luma: float, rng: np.random.Generator, chroma: float = 60.0) -> np.ndarray:
    """A random RGB colour (float32) of about the given luminance."""
    tint = rng.uniform(-chroma, chroma, 3).astype(np.float32)
    tint -= LUMA @ tint  # the weights sum to 1: the tint adds no luminance
    return luma + tint


def pattern_mask(label: int, ph: int, pw: int, rng: np.random.Generator) -> np.ndarray:
    """The class pattern on a ph x pw patch: a boolean mask (True = foreground)."""
    u = ((np.arange(pw, dtype=np.float32) + 0.5) / pw)[None, :]
    v = ((np.arange(ph, dtype=np.float32) + 0.5) / ph)[:, None]
    freq, phase = rng.uniform(2.5, 4.0), rng.uniform(0, 2 * np.pi)
    name = CLASS_NAMES[label]
    if name == "hstripes":
        mask = np.sin(2 * np.pi * freq * v + phase) > 0
    elif name == "vstripes":
        mask = np.sin(2 * np.pi * freq * u + phase) > 0
    elif name == "diagonal":  # u + v constant runs from bottom left to top right
        mask = np.sin(2 * np.pi * freq * 0.75 * (u + v) + phase) > 0
    elif name == "antidiagonal":
        mask = np.sin(2 * np.pi * freq * 0.75 * (u - v) + phase) > 0
    elif name == "disc":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 < rng.uniform(0.36, 0.48) ** 2
    elif name == "ring":
        outer = rng.uniform(0.38, 0.48)
        r2 = (u - 0.5) ** 2 + (v - 0.5) ** 2
        mask = (r2 < outer**2) & (r2 > (outer * rng.uniform(0.5, 0.65)) ** 2)
    elif name == "square":
        half = rng.uniform(0.32, 0.46)
        mask = (np.abs(u - 0.5) < half) & (np.abs(v - 0.5) < half)
    elif name == "cross":
        half = rng.uniform(0.09, 0.15)
        mask = (np.abs(u - 0.5) < half) | (np.abs(v - 0.5) < half)
    elif name == "checker":
        cells = int(rng.integers(3, 5))
        mask = (np.floor(u * cells) + np.floor(v * cells)) % 2 == 0
    else:  # triangle, apex up
        mask = (np.abs(u - 0.5) < 0.46 * (v - 0.08) / 0.84) & (v < 0.92)
    return np.broadcast_to(mask, (ph, pw))


def render(
    label: int, height: int, width: int, rng: np.random.Generator, texture: bool = False
) -> Image.Image:
    """An upright photo-like RGB picture of class `label`, height x width; with `texture`
    the pattern covers the whole picture instead of a patch.

    Pixel work runs in Pillow's C code (resize, paste, add): about 1 ms at 256 x 256.
    """
    # background: a smooth gradient between four corner colours of about the same luminance,
    # with blotches of light and shade: a coarse grid of colours, bilinearly upsampled
    base = rng.uniform(40, 215)
    corners = np.stack([_colour(base + rng.uniform(-25, 25), rng) for _ in range(4)])
    gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    ty = np.linspace(0, 1, gh, dtype=np.float32)[:, None, None]
    tx = np.linspace(0, 1, gw, dtype=np.float32)[None, :, None]
    top = corners[0] + tx * (corners[1] - corners[0])
    bottom = corners[2] + tx * (corners[3] - corners[2])
    grid = top + ty * (bottom - top) + rng.uniform(-40, 40, (gh, gw, 1)).astype(np.float32)
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    # the pattern: an offset of 80-140 grey levels (lighter or darker, whichever has room)
    # on the background under it, so the local contrast holds across the gradient
    ph = max(4, round(height * rng.uniform(0.4, 0.75)))
    pw = max(4, round(width * rng.uniform(0.4, 0.75)))
    y0, x0 = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
    if texture:  # drawn all the same, so the other images' draws do not change
        ph, pw, y0, x0 = height, width, 0, 0
    box = (x0, y0, x0 + pw, y0 + ph)
    probes = [
        img.getpixel((x0 + pw * i // 4, y0 + ph * j // 4)) for i in (1, 2, 3) for j in (1, 2, 3)
    ]
    under = float(LUMA @ np.mean(probes, axis=0))
    patch = img.crop(box)
    contrast = rng.uniform(80, 140)
    delta = np.clip(np.round(_colour(contrast, rng, chroma=40.0)), 0, 255).astype(int)
    mask = np.ascontiguousarray(pattern_mask(label, ph, pw, rng)).view(np.uint8) * np.uint8(255)
    layer = Image.new("RGB", (pw, ph))
    layer.paste(tuple(delta.tolist()), (0, 0, pw, ph), Image.fromarray(mask, "L"))
    shift = ImageChops.add if under < 128 else ImageChops.subtract  # both clip to 0..255
    img.paste(shift(patch, layer), box)
    # sensor noise: one field added to every channel, centred on 0
    noise = int(rng.integers(3, 9))
    field = rng.integers(0, 2 * noise + 1, (height, width), dtype=np.uint8)
    f = Image.fromarray(field, "L")
    return ImageChops.add(img, Image.merge("RGB", (f, f, f)), 1.0, -noise)


def encode(spec: Spec, rgb: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The upright RGB picture as the PIL image to save for the spec's kind."""
    kind = spec.kind
    if kind == "gray":
        return rgb.convert("L")
    if kind == "cmyk":
        return rgb.convert("CMYK")
    if kind == "gray16":  # 16-bit: the 8-bit levels in the high byte, fine detail in the low
        gray = np.asarray(rgb.convert("L"), dtype=np.uint16) << 8
        gray |= rng.integers(0, 256, gray.shape, dtype=np.uint16)
        return Image.fromarray(gray)  # uint16: mode I;16
    if kind == "rgba":  # a soft vignette in alpha; the colour under it is the picture
        ry = np.abs(np.linspace(-1, 1, rgb.height, dtype=np.float32))[:, None]
        rx = np.abs(np.linspace(-1, 1, rgb.width, dtype=np.float32))[None, :]
        alpha = (255 - 160 * np.maximum(rx, ry) ** 4).astype(np.uint8)
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(alpha, "L"))
        return rgba
    if kind in ("palette", "palette_transparent"):
        colours = int(rng.choice((32, 64, 128, 256)))
        return rgb.quantize(colours, Image.Quantize.FASTOCTREE)
    turn = STORE_TURNS[KINDS[kind][3]]
    return rgb.transpose(turn) if turn is not None else rgb


def _write(spec: Spec, seed: int) -> None:
    """Render and save one image, from its own generator: (seed, index)."""
    rng = np.random.default_rng([seed, spec.index])
    im = encode(spec, render(spec.label, spec.height, spec.width, rng, spec.texture), rng)
    orientation = KINDS[spec.kind][3]
    if spec.kind == "palette_transparent":  # the background colour at the top-left corner
        im.save(spec.path, "PNG", transparency=im.getpixel((0, 0)))
    elif KINDS[spec.kind][1] == "png":
        im.save(spec.path, "PNG")
    elif orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(spec.path, "JPEG", quality=spec.quality, exif=exif.tobytes())
    else:
        im.save(spec.path, "JPEG", quality=spec.quality)


def _write_chunk(args: tuple[list[Spec], int]) -> int:
    specs, seed = args
    for spec in specs:
        _write(spec, seed)
    return len(specs)


def _kinds(n: int, modes: bool, rng: np.random.Generator) -> list[str]:
    """Each special kind on max(1, round(share * n)) images (when there is room), the rest rgb,
    in a random order."""
    kinds = ["rgb"] * n
    if not modes:
        return kinds
    counts = {k: max(1, round(share * n)) for k, (share, *_) in KINDS.items() if share}
    if sum(counts.values()) > n:  # too few images for one of each: as many kinds as fit
        counts = dict(list(counts.items())[:n])
        counts = {k: 1 for k in counts}
    order = rng.permutation(n)
    start = 0
    for kind, count in counts.items():
        for i in order[start : start + count]:
            kinds[i] = kind
        start += count
    return kinds


def _split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean test mask, stratified: round(test_fraction * count) images of each class."""
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(test_fraction * len(members))]] = True
    return test


def plan(
    root: Path,
    n: int,
    *,
    classes: int = 10,
    min_side: int = 32,
    max_side: int = 480,
    test_fraction: float = 0.2,
    seed: int = 0,
    modes: bool = True,
    large: int = 0,
    gray: bool = False,
    texture: bool = False,
) -> list[Spec]:
    """Draw every image's class, split, kind and size; write nothing."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be 2..{len(CLASS_NAMES)}, got {classes}")
    if n < classes or not 1 <= min_side <= max_side or not 0 <= large <= n:
        raise ValueError(
            f"need n >= classes ({n}, {classes}), 1 <= min_side <= max_side, 0 <= large <= n"
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng([seed, n, classes])
    labels = rng.permutation(np.arange(n) % classes)
    test = _split(labels, test_fraction, rng)
    kinds = ["gray"] * n if gray else _kinds(n, modes, rng)
    heights = rng.integers(min_side, max_side + 1, n)
    widths = rng.integers(min_side, max_side + 1, n)
    qualities = rng.integers(85, 91, n)
    odd = rng.permutation(n)
    big = odd[:large]
    heights[big] = rng.integers(LARGE_SIDES[0], LARGE_SIDES[1] + 1, large)
    widths[big] = rng.integers(LARGE_SIDES[0], LARGE_SIDES[1] + 1, large)
    if modes and n - large >= 20:
        heights[odd[large]] = TINY_SIDE
        widths[odd[large + 1]] = TINY_SIDE
    digits = max(6, len(str(n - 1)))
    specs = []
    for i in range(n):
        kind, h, w = kinds[i], int(heights[i]), int(widths[i])
        if KINDS[kind][3] != 1 and h == w:  # rotated ones are never square: the turn shows
            w = w + 1 if w < max(max_side, TINY_SIDE) else w - 1
        split = "test" if test[i] else "train"
        ext = KINDS[kind][1]
        path = os.fspath(root / split / f"c{labels[i]}_{i:0{digits}d}.{ext}")
        specs.append(Spec(i, split, int(labels[i]), kind, h, w, int(qualities[i]), path, texture))
    return specs


def write_photo_dataset(
    root: Path,
    n: int,
    *,
    classes: int = 10,
    min_side: int = 32,
    max_side: int = 480,
    test_fraction: float = 0.2,
    seed: int = 0,
    modes: bool = True,
    workers: int = 1,
    large: int = 0,
    gray: bool = False,
    texture: bool = False,
) -> dict:
    """Write n images and a groundtruth.csv per split into root (seed folder format).

    Returns a summary: images, classes (names), splits {split: count}, per_class
    {split: {class: count}}, modes {stored PIL mode: count}, kinds {kind: count}, rotated
    (EXIF-oriented JPEGs), large, tiny, bytes.
    """
    root = Path(root)
    specs = plan(
        root,
        n,
        classes=classes,
        min_side=min_side,
        max_side=max_side,
        test_fraction=test_fraction,
        seed=seed,
        modes=modes,
        large=large,
        gray=gray,
        texture=texture,
    )
    names = CLASS_NAMES[:classes]
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        with (root / split / "groundtruth.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", "label"])
            for spec in specs:
                if spec.split == split:
                    writer.writerow([os.path.basename(spec.path), names[spec.label]])
    workers = max(1, min(workers, n))
    if workers == 1:
        _write_chunk((specs, seed))
    else:  # interleaved chunks: large images spread over the workers
        chunks = [(specs[i :: workers * 4], seed) for i in range(workers * 4)]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(_write_chunk, chunks, chunksize=1)
    return {
        "images": n,
        "classes": list(names),
        "splits": dict(Counter(s.split for s in specs)),
        "per_class": {
            split: {
                names[k]: c
                for k, c in sorted(Counter(s.label for s in specs if s.split == split).items())
            }
            for split in ("train", "test")
        },
        "modes": dict(sorted(Counter(KINDS[s.kind][2] for s in specs).items())),
        "kinds": dict(sorted(Counter(s.kind for s in specs).items())),
        "rotated": sum(KINDS[s.kind][3] != 1 for s in specs),
        "large": sum(min(s.height, s.width) >= LARGE_SIDES[0] for s in specs),
        "tiny": sum(min(s.height, s.width) <= TINY_SIDE for s in specs),
        "bytes": sum(os.path.getsize(s.path) for s in specs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.photos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, help="dataset root to write (train/, test/)")
    parser.add_argument("--n", type=int, default=1000, help="images to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--large", type=int, default=0, help="images with sides 2000..4000")
    parser.add_argument("--workers", type=int, default=1, help="processes (0: all cores)")
    parser.add_argument("--min-side", type=int, default=32)
    parser.add_argument("--max-side", type=int, default=480)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--no-modes", action="store_true", help="RGB JPEGs only")
    parser.add_argument("--gray", action="store_true", help="grayscale JPEGs only")
    parser.add_argument("--texture", action="store_true", help="patterns fill the picture")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir}: folder exists and is not empty")
    start = time.perf_counter()
    summary = write_photo_dataset(
        args.out_dir,
        args.n,
        classes=args.classes,
        min_side=args.min_side,
        max_side=args.max_side,
        test_fraction=args.test_fraction,
        seed=args.seed,
        modes=not args.no_modes,
        workers=args.workers or os.cpu_count() or 1,
        large=args.large,
        gray=args.gray,
        texture=args.texture,
    )
    seconds = time.perf_counter() - start
    print(
        f"photos: {args.n:,} images ({summary['splits']}) in {seconds:.1f} s "
        f"({args.n / seconds:,.0f} images/s), {summary['bytes'] / 2**20:.1f} MiB -> {args.out_dir}"
    )
    print(f"  modes {summary['modes']}; rotated {summary['rotated']}, large {summary['large']}")


if __name__ == "__main__":
    main()
