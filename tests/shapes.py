"""A synthetic "shapes" dataset, written in every source format the importers accept.

Circles, squares and triangles on 32x32 RGB images, 1-3 shapes per image, no overlaps, with
tight boxes, per-class counts and class masks (pixel = category id: circle 1, square 2,
triangle 3; 0 background). Image formats rotate through PNG, JPG, BMP and GIF with mixed-case
extensions. `single_label=True` draws one shape type per image (what imagefolder can hold).

Writes, under `root/<format>/`: seed (multi-label `;` CSV), seed_onehot (0/1 columns, also the
seed importer), seed_json, imagefolder, coco, voc, yolo. Reads nothing.

Run: python tests/shapes.py OUT_DIR
"""

import csv
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "triangle")  # category ids 1, 2, 3
COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 40), "triangle": (40, 80, 230)}
SIZE = 32
EXTENSIONS = (".png", ".JPG", ".bmp", ".GIF")
FORMATS = ("seed", "seed_onehot", "seed_json", "imagefolder", "coco", "voc", "yolo")


@dataclass(frozen=True)
class Shape:
    kind: str
    x: int  # tight box of the drawn pixels, COCO [x, y, w, h]
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Sample:
    split: str
    file: str  # base name with extension
    shapes: tuple[Shape, ...]

    @property
    def stem(self) -> str:
        return Path(self.file).stem


def _stamp(kind: str, size: int) -> np.ndarray:
    """Boolean pixels of one shape in a size x size square."""
    i, j = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "circle":
        r = size / 2
        return (i - r) ** 2 + (j - r) ** 2 <= r * r
    return np.abs(j - size / 2) <= i / 2  # triangle: apex at top, base at the bottom row


def generate(
    seed: int = 0, n_train: int = 24, n_test: int = 12, single_label: bool = False
) -> list[Sample]:
    """Return the samples (shape boxes are the tight bounds of their drawn pixels)."""
    rng = np.random.default_rng(seed)
    samples = []
    for split, n in (("train", n_train), ("test", n_test)):
        for k in range(n):
            kinds = rng.choice(CLASSES, size=int(rng.integers(1, 4)))
            if single_label:
                kinds = [CLASSES[k % 3]] * len(kinds)
            elif k < 3:
                kinds = [CLASSES[k]]  # every class appears in every split
            shapes: list[Shape] = []
            for kind in kinds:
                for _ in range(50):  # rejection sampling: no overlapping boxes
                    size = int(rng.integers(5, 12))
                    x, y = (int(v) for v in rng.integers(0, SIZE - size, 2))
                    mask = _stamp(str(kind), size)
                    rows, cols = np.nonzero(mask)
                    box = Shape(str(kind), x + int(cols.min()), y + int(rows.min()),
                                int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1)  # fmt: skip
                    if not any(_overlap(box, s) for s in shapes):
                        shapes.append(box)
                        break
            file = f"{split}_{k:03d}{EXTENSIONS[k % len(EXTENSIONS)]}"
            samples.append(Sample(split, file, tuple(shapes)))
    return samples


def _overlap(a: Shape, b: Shape) -> bool:
    gap = 1
    return not (
        a.x + a.w + gap <= b.x
        or b.x + b.w + gap <= a.x
        or a.y + a.h + gap <= b.y
        or b.y + b.h + gap <= a.y
    )


def render(sample: Sample, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (RGB uint8 [32, 32, 3], mask uint8 [32, 32]) for one sample."""
    rng = np.random.default_rng(zlib.crc32(sample.file.encode()) + seed)  # stable across runs
    image = rng.integers(0, 50, (SIZE, SIZE, 3)).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for s in sample.shapes:
        region = _region(s)
        image[s.y : s.y + s.h, s.x : s.x + s.w][region] = COLOURS[s.kind]
        mask[s.y : s.y + s.h, s.x : s.x + s.w][region] = CLASSES.index(s.kind) + 1
    return image, mask


def _region(s: Shape) -> np.ndarray:
    """The shape's pixels inside its tight box (re-derived from the stamp that made the box)."""
    for size in range(max(s.w, s.h), max(s.w, s.h) + 3):
        stamp = _stamp(s.kind, size)
        rows, cols = np.nonzero(stamp)
        if np.ptp(cols) + 1 == s.w and np.ptp(rows) + 1 == s.h:
            return stamp[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    raise AssertionError(f"no stamp fits {s}")


def labels(sample: Sample) -> list[str]:
    """The classes drawn in a sample, sorted."""
    return sorted({s.kind for s in sample.shapes})


def counts(sample: Sample) -> dict[str, int]:
    """Class name -> number of shapes of it in a sample."""
    return {k: sum(s.kind == k for s in sample.shapes) for k in labels(sample)}


def _save_image(sample: Sample, folder: Path, with_mask: bool) -> None:
    image, mask = render(sample)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(folder / sample.file)
    if with_mask:
        (folder / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask, "L").save(folder / "masks" / f"{sample.stem}.png")


def write_seed(root: Path, samples: list[Sample], one_hot: bool = False) -> Path:
    """Seed CSV: `filename,label` with ';'-joined labels, or one 0/1 column per class."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        with (root / split / "groundtruth.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", *CLASSES] if one_hot else ["filename", "label"])
            for s in (s for s in samples if s.split == split):
                _save_image(s, root / split, with_mask=False)
                names = labels(s)
                row = [int(c in names) for c in CLASSES] if one_hot else [";".join(names)]
                writer.writerow([s.file, *row])
    return root


def write_seed_json(root: Path, samples: list[Sample]) -> Path:
    for split in ("train", "test"):
        entries = []
        for s in (s for s in samples if s.split == split):
            _save_image(s, root / split, with_mask=True)
            boxes = [
                {"name": b.kind, "x1": b.x, "x2": b.x + b.w, "y1": b.y, "y2": b.y + b.h}
                for b in s.shapes
            ]
            entries.append(
                {
                    "filename": s.file,
                    "class labels": labels(s),
                    "counts": counts(s),
                    "bounding boxes": boxes,
                    "segmentation mask": f"masks/{s.stem}.png",
                }
            )
        (root / split / "meta.json").write_text(json.dumps(entries, indent=1))
    return root


def write_imagefolder(root: Path, samples: list[Sample]) -> Path:
    """Class subfolders; needs single-label samples (one shape type per image)."""
    for s in samples:
        (kind,) = labels(s)
        _save_image(s, root / s.split / kind, with_mask=False)
    (root / "train" / ".ipynb_checkpoints").mkdir(parents=True, exist_ok=True)
    return root


def write_coco(root: Path, samples: list[Sample]) -> Path:
    cats = [
        {"id": 10 * (i + 1), "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)
    ]
    cat_id = {c["name"]: c["id"] for c in cats}  # deliberately not 1..N: matched by name
    for split in ("train", "test"):
        images, anns = [], []
        for image_id, s in enumerate((s for s in samples if s.split == split), start=100):
            _save_image(s, root / split, with_mask=True)
            images.append(
                {
                    "id": image_id,
                    "file_name": s.file,
                    "width": SIZE,
                    "height": SIZE,
                    "mask_file": f"masks/{s.stem}.png",
                }  # fmt: skip
            )
            for b in s.shapes:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": cat_id[b.kind],
                        "bbox": [b.x, b.y, b.w, b.h],
                        "area": b.w * b.h,
                        "iscrowd": 0,
                    }  # fmt: skip
                )
        data = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def voc_xml(
    file: str, shapes: tuple[Shape, ...], size: int = SIZE, one_based: bool = False
) -> str:
    """One VOC annotation; continuous 0-based corners (x = xmin, w = xmax - xmin), as Datumaro,
    CVAT and globox write them, or `one_based`: the devkit's inclusive pixel indices
    (x = xmin - 1, w = xmax - xmin + 1)."""
    objects = "".join(
        f"<object><name>{b.kind}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{b.x + one_based}</xmin><ymin>{b.y + one_based}</ymin>"
        f"<xmax>{b.x + b.w}</xmax><ymax>{b.y + b.h}</ymax></bndbox></object>"
        for b in shapes
    )
    return (
        f"<annotation><folder>train</folder><filename>{file}</filename><size><width>{size}"
        f"</width><height>{size}</height><depth>3</depth></size><segmented>1</segmented>"
        f"{objects}</annotation>\n"
    )


def write_voc(root: Path, samples: list[Sample], one_based: bool = False) -> Path:
    """VOC XML beside each image; 0-based continuous corners unless `one_based` (devkit)."""
    for s in samples:
        _save_image(s, root / s.split, with_mask=True)
        xml = voc_xml(s.file, s.shapes, one_based=one_based)
        (root / s.split / f"{s.stem}.xml").write_text(xml)
    return root


def write_yolo(root: Path, samples: list[Sample]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for s in samples:
        _save_image(s, root / s.split, with_mask=True)
        lines = [
            f"{CLASSES.index(b.kind)} {(b.x + b.w / 2) / SIZE!r} {(b.y + b.h / 2) / SIZE!r} "
            f"{b.w / SIZE!r} {b.h / SIZE!r}"
            for b in s.shapes
        ]
        (root / s.split / f"{s.stem}.txt").write_text("".join(line + "\n" for line in lines))
    return root


def write_all(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write the dataset in every format; imagefolder gets the single-label variant."""
    samples, single = generate(seed), generate(seed, single_label=True)
    return {
        "seed": write_seed(root / "seed", samples),
        "seed_onehot": write_seed(root / "seed_onehot", samples, one_hot=True),
        "seed_json": write_seed_json(root / "seed_json", samples),
        "imagefolder": write_imagefolder(root / "imagefolder", single),
        "coco": write_coco(root / "coco", samples),
        "voc": write_voc(root / "voc", samples),
        "yolo": write_yolo(root / "yolo", samples),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/shapes.py OUT_DIR")
    for fmt, path in write_all(Path(sys.argv[1])).items():
        print(f"{fmt}: {path}")
