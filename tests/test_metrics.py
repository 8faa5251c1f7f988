"""Metrics for single- and multi-label predictions, checked against hand-computed values."""

import numpy as np
import pytest

from models.common import metrics

NAMES = ["a", "b", "c"]


def test_single_label_summary_and_confusion() -> None:
    y = np.eye(3, dtype=np.uint8)[[0, 1, 2, 2]]
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.1, 0.6, 0.3]])
    scores = metrics.summary(y, probs, NAMES, "single")
    assert scores["accuracy"] == 0.75
    per_class = {r["class"]: r for r in scores["per_class"]}
    assert per_class["b"]["precision"] == 0.5 and per_class["c"]["recall"] == 0.5
    assert scores["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    pred = metrics.predict(probs, "single")
    assert metrics.confusion(y, pred, NAMES)[3] == {"actual": "c", "predicted": "b"}
    assert metrics.confident_mistakes(y, probs, pred, 5).tolist() == [3]
    assert metrics.caption(y[3], probs[3], pred[3], NAMES) == "true c\npred b (0.60)"


def test_multi_label_summary() -> None:
    y = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], np.uint8)
    probs = np.array([[0.9, 0.8, 0.1], [0.2, 0.4, 0.1], [0.1, 0.2, 0.3], [0.7, 0.1, 0.9]])
    scores = metrics.summary(y, probs, NAMES, "multi", threshold=0.5)
    assert scores["accuracy"] == 0.75  # image 2 misses class b
    assert scores["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 0 + 1))
    b = scores["per_class"][1]
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (1, 0, 1, 2)
    assert b["ap"] == pytest.approx(1.0)  # both positives outrank the negatives
    assert scores["map"] == pytest.approx(1.0)


def test_multi_label_confusion_pairs_misses_with_none() -> None:
    y = np.array([[1, 1, 0]], np.uint8)
    pred = np.array([[1, 0, 1]], np.uint8)
    assert metrics.confusion(y, pred, NAMES) == [
        {"actual": "a", "predicted": "a"},
        {"actual": "b", "predicted": "(none)"},
        {"actual": "(none)", "predicted": "c"},
    ]
