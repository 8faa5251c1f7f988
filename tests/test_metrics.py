"""Metrics for single- and multi-label predictions, checked against hand-computed values."""

import hashlib

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


def test_a_collapsed_or_chance_level_cell_is_flagged() -> None:
    """Evaluate's checks: one class for every prediction is `collapsed`; accuracy within 2
    standard errors of the majority-class rate is not `above_chance`; a good model is
    neither, and the warnings say so in words (make run prints them)."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)  # two balanced classes
    y = np.eye(2, dtype=np.uint8)[truth]
    one_class = np.tile([0.9, 0.1], (400, 1))
    coin = np.eye(2)[rng.integers(0, 2, 400)] * 0.8 + 0.1
    good = np.eye(2)[truth] * 0.8 + 0.1
    flags = lambda p: metrics.summary(y, p, ["a", "b"], "single")  # noqa: E731
    collapsed, chance, fine = flags(one_class), flags(coin), flags(good)
    assert (collapsed["collapsed"], collapsed["above_chance"]) == (True, False)
    assert collapsed["top_prediction_share"] == 1.0
    assert (chance["collapsed"], chance["above_chance"]) == (False, False)
    assert (fine["collapsed"], fine["above_chance"]) == (False, True)
    assert metrics.health_warnings(fine) == []
    words = metrics.health_warnings(collapsed)
    assert words[0] == "predictions collapsed: one class takes 100% of the test images"
    assert words[1].startswith("accuracy 0.") and "not above chance" in words[1]


def test_the_leaderboard_marks_the_promoted_cell_and_warns(tmp_path, monkeypatch) -> None:
    import json

    from models import leaderboard

    (tmp_path / "models/metrics").mkdir(parents=True)
    (tmp_path / "deployment").mkdir()
    test = {"accuracy": 0.5, "f1_macro": 0.33, "majority_rate": 0.5, "top_prediction_share": 1.0}
    cells = {
        "d-cnn-quick": {
            "accuracy": 0.98,
            "f1_macro": 0.97,
            "collapsed": False,
            "above_chance": True,
        },
        "d-resnet-quick": test | {"collapsed": True, "above_chance": False},
    }
    for name, scores in cells.items():  # evaluate's files: headline, details, the timing log
        headline = {k: scores[k] for k in ("accuracy", "f1_macro")} | {"ece": 0.01, "size_mb": 0.3}
        (tmp_path / f"models/metrics/{name}.json").write_text(json.dumps(headline))
        run = tmp_path / "models/runs" / name
        (run / "eval").mkdir(parents=True)
        (run / "eval/metrics.json").write_text(json.dumps({"test": scores}))
        (run / "logs").mkdir()
        (run / "logs/profile.json").write_text(json.dumps({"infer_ms_b1": 0.5}))
    bundle = tmp_path / "models/runs/d-cnn-quick/bundle"
    bundle.mkdir()
    (bundle / "model.keras").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    pointer = {"name": "d-cnn-quick", "version": sha[:12], "sha256": sha}
    pointer |= {"metrics": {"f1_macro": 0.99}}
    (tmp_path / "deployment/d").mkdir()
    (tmp_path / "deployment/d/production.json").write_text(json.dumps(pointer))
    grid = {"datasets": ["d"], "models": {"cnn": {}, "resnet": {}}, "hparams": {"quick": {}}}
    (tmp_path / "params.yaml").write_text(json.dumps(grid))
    monkeypatch.chdir(tmp_path)
    lines = leaderboard.table("d", leaderboard.rows("d"), pointer).splitlines()
    assert lines[1].split() == ["*d-cnn-quick", "0.9800", "0.9700", "0.0100", "0.30", "0.50"]
    assert lines[2].split()[0] == "d-resnet-quick"
    assert lines[3].startswith("   warning: predictions collapsed")
    assert "not above chance" in lines[4] and lines[-1].startswith("* promoted")
    assert max(map(len, lines)) <= 100
    # retrained since: production keeps the earlier model, and the table says so
    (bundle / "model.keras").write_bytes(b"retrained")
    lines = leaderboard.table("d", leaderboard.rows("d"), pointer).splitlines()
    assert lines[1].split()[0] == "d-cnn-quick"
    assert (
        lines[-2]
        == f"production: d-cnn-quick version {sha[:12]} (macro F1 0.9900), an earlier training"
    )
    assert max(map(len, lines)) <= 100


def test_compare_gathers_every_cells_validation_curve(tmp_path) -> None:
    from models.compare import curves

    for cell, values in {"d-cnn-quick": (0.5, 0.7), "d-mlp-quick": (0.4, 0.45)}.items():
        (tmp_path / "accuracy").mkdir(exist_ok=True)
        lines = ["epoch\ttrain\tval"] + [f"{e}\t0.9\t{v}" for e, v in enumerate(values, 1)]
        (tmp_path / "accuracy" / f"{cell}.tsv").write_text("\n".join(lines) + "\n")
    assert curves(tmp_path, "accuracy") == [
        {"epoch": 1, "cell": "d-cnn-quick", "value": 0.5},
        {"epoch": 2, "cell": "d-cnn-quick", "value": 0.7},
        {"epoch": 1, "cell": "d-mlp-quick", "value": 0.4},
        {"epoch": 2, "cell": "d-mlp-quick", "value": 0.45},
    ]


def test_calibration_error_of_calibrated_and_overconfident_scores() -> None:
    from models.common.calibration import Calibration

    rng = np.random.default_rng(0)
    n, k = 20000, 4
    confidence = rng.uniform(0.5, 1.0, n)  # calibrated: right with probability = confidence
    right = rng.uniform(size=n) < confidence
    truth = rng.integers(0, k, n)
    top = np.where(right, truth, (truth + 1) % k)
    probs = np.full((n, k), 0.0)
    probs[np.arange(n), top] = confidence
    probs[np.arange(n), (top + 2) % k] = 1 - confidence  # the rest, never above the top
    y = np.eye(k)[truth]
    calibrated = Calibration("single")
    for start in range(0, n, 4096):  # streamed in batches
        calibrated.update(y[start : start + 4096], probs[start : start + 4096])
    assert calibrated.ece() < 0.02 and calibrated.count.sum() == n
    overconfident = Calibration("single")  # 99% sure, right half the time
    half = np.eye(2)[[0, 1] * 50]
    overconfident.update(half, np.tile([[0.99, 0.01]], (100, 1)))
    assert overconfident.ece() == pytest.approx(0.49) and overconfident.mce() == pytest.approx(
        0.49
    )
    (row,) = overconfident.reliability()
    assert row == {"bin": "0.93-1.00", "confidence": 0.99, "accuracy": 0.5, "count": 100}


def test_multilabel_calibration_counts_every_class_probability() -> None:
    from models.common.calibration import Calibration

    cal = Calibration("multi", bins=2)
    y = np.array([[1, 0, 1], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.4, 0.8]])
    cal.update(y, probs)
    # bin 0 (p < 0.5): 0.2, 0.1, 0.4, none present; bin 1: 0.9, 0.6, 0.8, all present
    assert cal.count.tolist() == [3, 3]
    assert cal.ece() == pytest.approx((0.7 / 3 * 3 + (1 - 2.3 / 3) * 3) / 6)
