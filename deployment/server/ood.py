"""Input validation: each served image's out-of-distribution (OOD) score, in 0..1.

Reads bundle/input_stats.json (models/export.py, through models/common/input_stats.py: the
training images' statistics and the test set's top scores) once, when the bundle loads
(`load`); a bundle without it is served with no score (None). Writes nothing.

Checks, each scored in 0..1, 0 inside its reference range:
    long_side, short_side  the upload's sides from its header (a pixels tensor's H x W,
                           unchecked at the bundle's stored size: what the model reads)
                           against the training files' 1st..99th percentile; the distance d
                           in doublings (twice the 99th percentile: d = 1)
    brightness, contrast   mean and standard deviation of the prepared gray pixels (gray:
                           the channel mean) against the training images' 1st..99th
                           percentile; d in interquartile ranges (at least MIN_SPREAD levels)
    mode                   a file mode (Pillow's: L, RGB, RGBA, P, ...) no sampled training
                           file had scores MODE_SCORE: the pixels are converted as in
                           training, so a moderate flag; a tensor has no mode
    top_score              the top served score under the test set's 1st percentile p1
                           scores (p1 - top) / p1: the way from p1 down to 0
A range check scores d / (1 + d): 0.5 one unit outside the range, 0.9 nine units. An image's
score is its worst check's, and its reasons are the checks that scored above 0, worst first:
{"check", "value", "range": [low, high] (mode: "seen": [modes]), "score"}.

Cost per image: gray mean and deviation on a strided grid (the bundle's serving.gray_stats),
then a few comparisons with bounds precomputed by `load`: about 10 us for a small image.
"""

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

FILE = "input_stats.json"
MIN_SPREAD = 2.0  # gray levels: the unit of a brightness or contrast distance at least
MODE_SCORE = 0.5
SIDES, PIXELS = ("long_side", "short_side"), ("brightness", "contrast")
TENSOR_MODES = {1: "L", 3: "RGB"}  # what a pixels tensor's channels stand for


@dataclass(frozen=True)
class InputStats:
    """What `score` compares with, precomputed from input_stats.json."""

    ranges: dict[str, tuple[float, float, float]]  # check -> (p1, p99, unit of distance)
    modes: tuple[str, ...]  # modes seen in training; () when unknown: mode is unchecked
    top_p1: float | None  # the test set's 1st percentile of the top score
    stored_size: tuple[int, int] | None  # (h, w) of the pixels the model was trained on
    gray_stats: Callable[[np.ndarray], tuple[float, float]]  # the bundle's serving.gray_stats


def load(bundle_dir: Path, serving: ModuleType) -> InputStats | None:
    """The bundle's input_stats.json with its code's measure (serving.gray_stats: export
    measured the training images with it), or None when it has none or it is unreadable
    (logged: the server serves on, without OOD scores)."""
    path = Path(bundle_dir) / FILE
    if not path.is_file():
        return None
    if not hasattr(serving, "gray_stats"):
        print(
            f"serve: no OOD score: {bundle_dir} predates serving.gray_stats (re-export)",
            file=sys.stderr,
            flush=True,
        )
        return None
    try:
        data = json.loads(path.read_text())
        ranges = {}
        for name, s in data["statistics"].items():
            unit = 0.0 if name in SIDES else max(s["p75"] - s["p25"], MIN_SPREAD)
            ranges[name] = (float(s["p1"]), float(s["p99"]), unit)  # unit 0: log2 distance
        top = data.get("top_score") or {}
        size = data.get("stored_size")
        return InputStats(
            ranges,
            tuple(data.get("modes") or ()),
            float(top["p1"]) if "p1" in top else None,
            (int(size[0]), int(size[1])) if size else None,
            serving.gray_stats,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        print(f"serve: no OOD score: {path}: {err!r}", file=sys.stderr, flush=True)
        return None


def _distance(value: float, low: float, high: float, unit: float) -> float:
    """How far value lies outside [low, high]: in units, or in doublings when unit is 0."""
    if low <= value <= high:
        return 0.0
    if not unit:
        return abs(math.log2(max(value, 1.0) / max(low if value < low else high, 1.0)))
    return (low - value if value < low else value - high) / unit


def score(stats: InputStats, image_meta: dict, top_score: float | None) -> dict:
    """One image's OOD score and its reasons (the module docstring).

    Args:
        stats: the bundle's InputStats (`load`).
        image_meta: any of long_side, short_side, brightness, contrast (numbers) and mode
            (a Pillow mode); an absent or None one is not checked.
        top_score: the image's top served score; None: not checked.

    Returns:
        {"score": float in 0..1, "reasons": [{"check", "value", "range" | "seen", "score"}]}.
    """
    reasons = []
    for name, (low, high, unit) in stats.ranges.items():
        value = image_meta.get(name)
        if value is not None and (d := _distance(value, low, high, unit)):
            reasons.append(_reason(name, value, d / (1 + d), range=[low, high]))
    mode = image_meta.get("mode")
    if mode is not None and stats.modes and mode not in stats.modes:
        reasons.append(_reason("mode", mode, MODE_SCORE, seen=list(stats.modes)))
    p1 = stats.top_p1
    if top_score is not None and p1 and top_score < p1:
        reasons.append(_reason("top_score", top_score, (p1 - top_score) / p1, range=[p1, 1.0]))
    reasons.sort(key=lambda r: -r["score"])
    return {"score": reasons[0]["score"] if reasons else 0.0, "reasons": reasons}


def _reason(check: str, value, score: float, **expected) -> dict:
    value = round(value, 4) if isinstance(value, float) else value
    return {"check": check, "value": value, **expected, "score": round(score, 4)}


def measure(image: np.ndarray, header: tuple[int, int, str] | None, stats: InputStats) -> dict:
    """The statistics `score` checks of one prepared image, uint8 [h, w, C]; header is the
    upload's (width, height, mode), None for a pixels tensor (its own H x W, no mode)."""
    brightness, contrast = stats.gray_stats(image)
    meta = {"brightness": round(brightness, 2), "contrast": round(contrast, 2)}
    if header is not None:
        width, height, meta["mode"] = header
    elif tuple(image.shape[:2]) != stats.stored_size:
        height, width = image.shape[:2]
    else:  # a tensor at the stored size is what the shards hold: its sides are fine
        return meta
    return meta | {"long_side": max(width, height), "short_side": min(width, height)}


def for_images(bundle, images: list[np.ndarray], probs: np.ndarray, headers=None):
    """Each image's `score` for a served request, or None when the bundle has no
    input_stats.json.

    Args:
        bundle: the request's bundle (deployment.server.bundle.Bundle: its input_stats).
        images: the prepared (or tensor) images, uint8 [h, w, C].
        probs: their served scores [N, K].
        headers: each upload's (width, height, mode) (predict.decode_images), or None /
            empty for a pixels tensor.

    Returns:
        [{"score", "reasons"}] per image, or None.
    """
    stats = getattr(bundle, "input_stats", None)
    if stats is None:
        return None
    tops = probs.max(axis=1).tolist()
    return [
        score(stats, measure(image, headers[i] if headers else None, stats), tops[i])
        for i, image in enumerate(images)
    ]


def describe(reason: dict) -> str:
    """One reason in words, for the 422."""
    check, value = reason["check"], reason["value"]
    if check == "mode":
        return f"mode {value} was never seen in training (seen: {', '.join(reason['seen'])})"
    low, high = reason["range"]
    if check == "top_score":
        return f"top score {value:.4f} is under the test set's 1st percentile {low:.4f}"
    return (
        f"{check} {value:g} is outside the training range {low:g}..{high:g} "
        "(1st to 99th percentile)"
    )


def refusal(results: list[dict] | None, threshold: float) -> str | None:
    """Why the request is refused (the 422's message): the first image scored over
    threshold, in words; None when none is, or threshold is 0 (never refuse)."""
    if not results or threshold <= 0:
        return None
    for i, result in enumerate(results):
        if result["score"] > threshold:
            which = f"image {i} of {len(results)}" if len(results) > 1 else "the image"
            why = "; ".join(describe(r) for r in result["reasons"])
            return (
                f"{which} is out of distribution (OOD score {result['score']:.4f} over "
                f"--ood-threshold {threshold:g}): {why}"
            )
    return None
