"""Prediction drift: each served model's last W live predictions against its test-set reference.

Reads bundle/reference.json (written by models/export.py through models/common/reference.py:
the test set's predicted-class fractions and its top-score mean and histogram). Writes
nothing; its gauges appear in GET /metrics, one series per served model (label `model`),
computed when Prometheus scrapes, never per request:

    serve_drift_window_predictions  predictions the window holds now (0..W, --drift-window)
    serve_drift_psi                 PSI of the window's predicted-class distribution
                                    against the reference's
    serve_confidence_psi            PSI of the window's top-score histogram against the
                                    reference's (the same bins as serve_prediction_confidence)
    serve_confidence_shift          window mean top score - reference mean top score;
                                    negative: the model is less sure than on its test set

PSI (Population Stability Index) = sum_i (live_i - ref_i) * ln(live_i / ref_i) over the bins,
each fraction floored at EPSILON (an empty bin is rare, not infinite); < 0.1 reads stable,
> 0.25 a significant shift. Sampling noise alone gives about (bins - 1) / n for n predictions,
so read it once the window is full. Without a usable reference.json the comparison gauges
are absent; with an empty window they read NaN. A model swap empties the window.
"""

import json
import math
import sys
import threading
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import GaugeMetricFamily

EPSILON = 1e-4  # the floor of a bin's fraction in PSI


def psi(live: np.ndarray | list[float], reference: np.ndarray | list[float]) -> float:
    """Population Stability Index of two distributions over the same bins.

    Args:
        live, reference: counts or fractions per bin (each is normalized to sum 1).

    Returns:
        sum (live - reference) * ln(live / reference), fractions floored at EPSILON; 0 for
        identical distributions, NaN when live holds nothing.
    """
    live, reference = np.asarray(live, np.float64), np.asarray(reference, np.float64)
    if live.sum() <= 0 or reference.sum() <= 0:
        return math.nan
    p = np.maximum(live / live.sum(), EPSILON)
    q = np.maximum(reference / reference.sum(), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True)
class Reference:
    """The parts of bundle/reference.json the gauges compare with."""

    predicted: np.ndarray  # [K] test-set fraction predicted as each class
    confidence_mean: float  # mean top score on the test set
    bins: np.ndarray  # confidence histogram upper bounds, ascending, the last 1.0
    histogram: np.ndarray  # [len(bins)] test-set fraction of top scores per bin


def load_reference(bundle) -> Reference | None:
    """The bundle's reference.json, or None when it is missing, unreadable or for other
    labels (logged: the server serves on, without drift gauges)."""
    path = bundle.path / "reference.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data["labels"] != list(bundle.labels):
            raise ValueError(f"labels {data['labels']} are not the bundle's {bundle.labels}")
        conf = data["confidence"]
        ref = Reference(
            np.asarray(data["predicted"], np.float64),
            float(conf["mean"]),
            np.asarray(conf["bins"], np.float64),
            np.asarray(conf["histogram"], np.float64),
        )
        if len(ref.histogram) != len(ref.bins) or len(ref.predicted) != len(bundle.labels):
            raise ValueError("histogram or predicted of the wrong length")
        return ref
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"serve: no drift reference: {path}: {err!r}", file=sys.stderr, flush=True)
        return None


class DriftWindow:
    """A ring buffer of the last `size` predictions (top-1 class and top score) of one
    bundle. `observe` is O(1) per prediction; `snapshot` copies it under the lock."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"drift window size must be >= 1, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._classes = np.zeros(size, np.int64)
        self._scores = np.zeros(size, np.float64)
        self._owner, self.reference, self._seen = None, None, 0

    def reset(self, bundle) -> str:
        """Empty the window and compare from now on with `bundle`'s reference; return a
        short description for the log."""
        reference = load_reference(bundle)
        with self._lock:
            self._owner, self.reference, self._seen = bundle, reference, 0
        if reference is None:
            return "no reference.json, drift gauges off"
        return f"window of {self.size} against reference.json"

    def observe(self, bundle, probs: np.ndarray) -> None:
        """Add each row of probs [N, K]; rows from any bundle but the current one are
        dropped (requests still finishing on the old bundle after a swap)."""
        if len(probs):
            self.observe_top(bundle, probs.argmax(axis=1).tolist(), probs.max(axis=1).tolist())

    def observe_top(self, bundle, classes: list[int], scores: list[float]) -> None:
        """`observe` for rows already reduced to their top-1 class and top score."""
        with self._lock:
            if bundle is not self._owner:
                return
            for cls, score in zip(classes, scores, strict=True):
                slot = self._seen % self.size
                self._classes[slot], self._scores[slot] = cls, score
                self._seen += 1

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, Reference | None]:
        """(classes [n], top scores [n], the reference) of the n predictions held now."""
        with self._lock:
            n = min(self._seen, self.size)
            return self._classes[:n].copy(), self._scores[:n].copy(), self.reference


HELP = {
    "serve_drift_window_predictions": "Predictions in the drift window",
    "serve_drift_psi": "PSI of the predicted-class distribution vs the reference",
    "serve_confidence_psi": "PSI of the top-score histogram vs the reference",
    "serve_confidence_shift": "Mean top score minus the reference's",
}


class DriftCollector:
    """A prometheus_client collector: the gauges of the module docstring, at scrape time, for
    every window of `windows` (served model name -> DriftWindow; read at each scrape)."""

    def __init__(self, windows: dict[str, DriftWindow]) -> None:
        self.windows = windows

    def describe(self):
        return [GaugeMetricFamily(name, text, labels=["model"]) for name, text in HELP.items()]

    def collect(self):
        families = {
            name: GaugeMetricFamily(name, text, labels=["model"]) for name, text in HELP.items()
        }
        for model, window in sorted(self.windows.items()):
            for name, value in _values(window).items():
                families[name].add_metric([model], value)
        yield from families.values()


def _values(window: DriftWindow) -> dict[str, float]:
    classes, scores, ref = window.snapshot()
    values = {"serve_drift_window_predictions": len(classes)}
    if ref is not None:
        live = np.bincount(classes, minlength=len(ref.predicted))
        bins = np.minimum(np.searchsorted(ref.bins, scores, side="left"), len(ref.bins) - 1)
        values["serve_drift_psi"] = psi(live, ref.predicted)
        values["serve_confidence_psi"] = psi(
            np.bincount(bins, minlength=len(ref.bins)), ref.histogram
        )
        mean = float(scores.mean()) if len(scores) else math.nan
        values["serve_confidence_shift"] = mean - ref.confidence_mean
    return values
