"""The training set's input statistics, which a server compares each request with (its
out-of-distribution score, deployment/server/ood.py).

models/export.py writes bundle/input_stats.json from a seeded uniform sample of at most
`export.input_stats_images` train records (the shards' train split, validation share
included) and from the test predictions evaluate wrote:

    {"images": n sampled, "of": N train records, "stored_size": [h, w], "channels": C,
     "statistics": {name: {"p1", "p25", "p50", "p75", "p99", "min", "max", "images"}},
     "modes": {Pillow mode of the original file: count in the sample},
     "top_score": {"p1": float, "images": n test images} | null}

    long_side, short_side  the original file's sides in pixels, from its header alone (no
                           decode); long and short, so an EXIF-rotated photo measures the same
    brightness, contrast   mean and standard deviation of the stored pixels (the shards': the
                           very pixels a server's `prepare` makes of a file), gray = channel
                           mean, on a strided grid of them (serving.gray_stats)
    top_score.p1           the test set's 1st percentile of the served top score, read from
                           eval/predictions.jsonl line by line into a histogram of BINS bins
                           (bounded memory; the bin's lower edge: at most 1e-4 under the exact
                           value, so no test image scores below it)

Why a sample: headers of millions of files are minutes of I/O, while 2,000 images place the
1st and 99th percentiles well enough for a score that only asks "inside the training range,
or how far outside it". Uniform, not stratified: the statistics describe the whole training
distribution, which a uniform sample estimates without bias. Brightness and contrast come
from the shards (decoded once by the shard stage), never from decoding raw files again.
Original files that cannot be read (a feedback image gone from datasets/raw/feedback) are
skipped; with none readable the sides and modes are absent. numpy and Pillow only.
"""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.core.params import Params
from models.common.data import Shards
from models.common.serving import gray_stats  # the bundle's: the server measures with it

PERCENTILES = {"p1": 1, "p25": 25, "p50": 50, "p75": 75, "p99": 99}
BINS = 10_000  # top-score histogram bins over [0, 1]
CHUNK = 256  # records read from the shards at once


class ExportParams(Params):
    input_stats_images: int = 2000  # train images sampled for input_stats.json; 0: none


def summarize(values) -> dict:
    """The percentiles (PERCENTILES), min, max and count of a sample of one statistic."""
    values = np.asarray(values, np.float64)
    found = np.percentile(values, list(PERCENTILES.values()))
    summary = {k: round(float(v), 4) for k, v in zip(PERCENTILES, found, strict=True)}
    summary |= {"min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}
    return summary | {"images": int(len(values))}


def _headers(raw_dir: Path, names: list[str]) -> tuple[list[tuple[int, int]], Counter]:
    """(long side, short side) and the modes of the readable files, from headers only."""
    sides, modes = [], Counter()
    for name in names:
        try:
            with PILImage.open(raw_dir / name) as im:  # reads the header, decodes nothing
                (w, h), mode = im.size, im.mode
        except (OSError, ValueError, PILImage.DecompressionBombError):
            continue
        sides.append((max(w, h), min(w, h)))
        modes[mode] += 1
    return sides, modes


def top_score_p1(predictions: Path) -> dict | None:
    """{"p1", "images"} of the top scores in evaluate's predictions.jsonl; None without it."""
    if not predictions.is_file():
        return None
    counts = np.zeros(BINS, np.int64)
    with open(predictions, encoding="utf-8") as lines:
        for line in lines:
            top = json.loads(line)["top"][0][1]  # [[class, score], ...], best first
            counts[min(int(top * BINS), BINS - 1)] += 1
    n = int(counts.sum())
    if not n:
        return None
    rank = max(1, math.ceil(0.01 * n))  # the 1st percentile's image, counted from the lowest
    return {"p1": int(np.searchsorted(np.cumsum(counts), rank)) / BINS, "images": n}


def input_stats(
    shards: Shards, raw_dir: Path, predictions: Path, n_images: int, seed: int
) -> dict:
    """The input_stats.json content (module docstring).

    Args:
        shards: the dataset's shards (train records and their file names).
        raw_dir: datasets/raw/<dataset>, the root the file names are relative to.
        predictions: eval/predictions.jsonl (the test set's served top scores).
        n_images: train records sampled at most.
        seed: the sample's seed (params base.seed).
    """
    total = shards.count("train")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(n_images, total), replace=False))
    brightness, contrast = [], []
    for start in range(0, len(chosen), CHUNK):
        for image in shards.images("train", chosen[start : start + CHUNK]):
            b, c = gray_stats(image)
            brightness.append(b)
            contrast.append(c)
    files = shards.file_names("train")
    sides, modes = _headers(Path(raw_dir), [files[i] for i in chosen])
    statistics = {}
    if sides:
        statistics["long_side"] = summarize([s[0] for s in sides])
        statistics["short_side"] = summarize([s[1] for s in sides])
    if len(chosen):
        statistics |= {"brightness": summarize(brightness), "contrast": summarize(contrast)}
    return {
        "images": int(len(chosen)),
        "of": int(total),
        "stored_size": list(shards.image_size),
        "channels": shards.channels,
        "statistics": statistics,
        "modes": dict(sorted(modes.items())),
        "top_score": top_score_p1(Path(predictions)),
    }
