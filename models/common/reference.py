"""The test-set reference a server compares live predictions with (drift monitoring).

models/evaluate.py accumulates it batch by batch while it streams the test split
(`Reference.update`), adds the true class counts from its per-class rows, and writes
models/runs/<cell>/eval/reference.json; models/export.py copies it as bundle/reference.json:

    {"labels": [K names], "images": N,
     "predicted": [K fractions]   top-1 class distribution of the test predictions,
     "true": [K fractions] | null true class distribution (null without per_class),
     "confidence": {"mean", "std", "bins": [upper bounds], "histogram": [fractions]}}

A confidence histogram bin i holds the top scores in (bins[i-1], bins[i]] (the first from
0), as a Prometheus histogram's `le` buckets do; deployment/server/drift.py uses these bins and
fractions for serve_drift_psi and serve_confidence_psi. No TensorFlow: numpy and json only.
"""

from bisect import bisect_left

import numpy as np

# The same upper bounds as the server's serve_prediction_confidence histogram.
CONFIDENCE_BINS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def confidence_bin(score: float, bins: tuple[float, ...] | list[float] = CONFIDENCE_BINS) -> int:
    """The histogram bin of one top score: the first upper bound >= score (the last if over)."""
    return min(bisect_left(bins, score), len(bins) - 1)


def _fractions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c / total), 6) if total else 0.0 for c in counts]


class Reference:
    """The reference accumulated batch by batch (evaluate streams the test split)."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = list(labels)
        self.predicted = np.zeros(len(labels), np.int64)
        self.histogram = np.zeros(len(CONFIDENCE_BINS), np.int64)
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def update(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise ValueError(
                f"predictions: want [N, {len(self.labels)}] scores, got {probs.shape}"
            )
        top = probs.max(axis=1)
        self.predicted += np.bincount(probs.argmax(axis=1), minlength=len(self.labels))
        bins = np.minimum(
            np.searchsorted(CONFIDENCE_BINS, top, side="left"), len(CONFIDENCE_BINS) - 1
        )
        self.histogram += np.bincount(bins, minlength=len(CONFIDENCE_BINS))
        self.n += len(top)
        self.total += float(top.sum())
        self.squares += float((top**2).sum())

    def result(self, per_class: list[dict] | None = None) -> dict:
        """The reference.json content (see the module docstring)."""
        if not self.n:
            raise ValueError(f"predictions: want [N > 0, {len(self.labels)}] scores, got none")
        true = None
        if per_class is not None:
            support = {str(row["class"]): int(row["support"]) for row in per_class}
            if set(support) != set(self.labels):
                raise ValueError(f"per_class classes {sorted(support)} are not {self.labels}")
            true = _fractions(np.array([support[name] for name in self.labels]))
        mean = self.total / self.n
        std = max(self.squares / self.n - mean * mean, 0.0) ** 0.5
        return {
            "labels": self.labels,
            "images": int(self.n),
            "predicted": _fractions(self.predicted),
            "true": true,
            "confidence": {
                "mean": round(mean, 6),
                "std": round(std, 6),
                "bins": list(CONFIDENCE_BINS),
                "histogram": _fractions(self.histogram),
            },
        }
