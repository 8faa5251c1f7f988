"""Calibration: expected calibration error and a reliability diagram, streamed in bins.

A model is calibrated when, of the predictions it makes with confidence p, a share p is right.
ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks") is the mean gap
|accuracy - confidence| over BINS equal-width confidence bins, weighted by their counts; MCE is
the largest gap. Single-label: each image's top probability against whether the top class is
right. Multi-label: every (image, class) probability against whether the class is present.
Memory is three arrays of BINS numbers, whatever the test split's size.
"""

import numpy as np

BINS = 15  # as Guo et al.


class Calibration:
    def __init__(self, label_mode: str, bins: int = BINS) -> None:
        self.label_mode, self.bins = label_mode, bins
        self.count = np.zeros(bins, np.int64)
        self.confidence = np.zeros(bins)  # sums
        self.correct = np.zeros(bins)  # sums

    def update(self, y: np.ndarray, probs: np.ndarray) -> None:
        """Add a batch: multi-hot y [B, K] and probabilities [B, K]."""
        probs = np.asarray(probs, np.float64)
        if self.label_mode == "single":
            confidence = probs.max(axis=1)
            right = probs.argmax(axis=1) == np.asarray(y).argmax(axis=1)
        else:
            confidence, right = probs.ravel(), np.asarray(y).ravel().astype(bool)
        which = np.minimum((confidence * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(which, minlength=self.bins)
        self.confidence += np.bincount(which, confidence, self.bins)
        self.correct += np.bincount(which, right.astype(np.float64), self.bins)

    def ece(self) -> float:
        total = self.count.sum()
        return float(np.abs(self.correct - self.confidence).sum() / total) if total else 0.0

    def mce(self) -> float:
        seen = self.count > 0
        gaps = np.abs(self.correct[seen] - self.confidence[seen]) / self.count[seen]
        return float(gaps.max()) if seen.any() else 0.0

    def reliability(self) -> list[dict]:
        """One row per non-empty bin: the reliability diagram's data (a DVC plot)."""
        rows = []
        for b in np.flatnonzero(self.count):
            n = int(self.count[b])
            rows.append(
                {
                    "bin": f"{b / self.bins:.2f}-{(b + 1) / self.bins:.2f}",
                    "confidence": round(float(self.confidence[b] / n), 6),
                    "accuracy": round(float(self.correct[b] / n), 6),
                    "count": n,
                }
            )
        return rows
