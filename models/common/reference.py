"""The test-set reference a server compares live predictions with (drift monitoring).

Reads the cell's evaluate output, models/runs/<cell>/eval/predictions.json
({"categories": [K names], "predictions": {file: [K probabilities]}}), and optionally the
per-class rows of models/plots/per_class/<cell>.json (their "support" is the true class
count). models/export.py writes the result as bundle/reference.json:

    {"labels": [K names], "images": N,
     "predicted": [K fractions]   top-1 class distribution of the test predictions,
     "true": [K fractions] | null true class distribution (null without per_class),
     "confidence": {"mean", "std", "bins": [upper bounds], "histogram": [fractions]}}

A confidence histogram bin i holds the top scores in (bins[i-1], bins[i]] (the first from
0), as a Prometheus histogram's `le` buckets do; deployment/drift.py uses these bins and
fractions for serve_drift_psi and serve_confidence_psi. No TensorFlow: numpy and json only.
"""

import json
from bisect import bisect_left
from pathlib import Path

import numpy as np

# The same upper bounds as the server's serve_prediction_confidence histogram.
CONFIDENCE_BINS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def confidence_bin(score: float, bins: tuple[float, ...] | list[float] = CONFIDENCE_BINS) -> int:
    """The histogram bin of one top score: the first upper bound >= score (the last if over)."""
    return min(bisect_left(bins, score), len(bins) - 1)


def _fractions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c / total), 6) if total else 0.0 for c in counts]


def _load(predictions: Path | str | dict) -> dict:
    if isinstance(predictions, dict):
        return predictions
    path = Path(predictions)
    return json.loads((path / "predictions.json" if path.is_dir() else path).read_text())


def reference(predictions: Path | str | dict, per_class: list[dict] | None = None) -> dict:
    """The predicted-class, true-class and top-score distributions of the test predictions.

    Args:
        predictions: the eval dir, its predictions.json, or that file's parsed content.
        per_class: evaluate's per-class rows ({"class", "support", ...}); gives "true".

    Returns:
        The reference.json content (see the module docstring).

    Raises:
        ValueError: no predictions, rows of the wrong length, or per_class naming classes
            that are not the predictions' categories.
    """
    data = _load(predictions)
    labels = list(data["categories"])
    probs = np.array(list(data["predictions"].values()), np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != len(labels):
        raise ValueError(f"predictions: want [N > 0, {len(labels)}] scores, got {probs.shape}")
    top = probs.max(axis=1)
    predicted = np.bincount(probs.argmax(axis=1), minlength=len(labels))
    histogram = np.bincount([confidence_bin(s) for s in top], minlength=len(CONFIDENCE_BINS))
    true = None
    if per_class is not None:
        support = {str(row["class"]): int(row["support"]) for row in per_class}
        if set(support) != set(labels):
            raise ValueError(f"per_class classes {sorted(support)} are not {labels}")
        true = _fractions(np.array([support[name] for name in labels]))
    return {
        "labels": labels,
        "images": int(probs.shape[0]),
        "predicted": _fractions(predicted),
        "true": true,
        "confidence": {
            "mean": round(float(top.mean()), 6),
            "std": round(float(top.std()), 6),
            "bins": list(CONFIDENCE_BINS),
            "histogram": _fractions(histogram),
        },
    }
