"""Calibration and cut-offs: temperature scaling fitted on validation scores, per-class
thresholds for a target, and a bundle that serves both (models/common/calibrate.py,
postprocess.py and serving.py)."""

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_model, build_bundle, pattern

from models.common import calibrate, serving
from models.common.calibration import Calibration
from models.common.postprocess import Postprocess, decide, from_logits, scale


def _overconfident(label_mode: str, true_t: float, n: int = 20000, k: int = 5, seed: int = 0):
    """Logits of a model `true_t` times too confident: labels drawn from softmax (sigmoid)
    of the true logits, the model's logits are those times true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = from_logits(z, label_mode)
    if label_mode == "single":
        y = np.eye(k)[(p.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)]
    else:
        y = (rng.uniform(size=(n, k)) < p).astype(float)
    return z * true_t, y


def _ece(z, y, label_mode: str, t: float) -> float:
    cal = Calibration(label_mode)
    cal.update(y, from_logits(z / t, label_mode))
    return cal.ece()


@pytest.mark.parametrize("label_mode", ["single", "multi"])
def test_temperature_fit_recovers_a_known_temperature(label_mode: str) -> None:
    z, y = _overconfident(label_mode, 2.5)
    t = calibrate.fit_temperature(z, y, label_mode)
    assert t == pytest.approx(2.5, abs=0.2)
    assert calibrate.nll(z, y, label_mode, t) < calibrate.nll(z, y, label_mode) - 0.05
    before, after = _ece(z, y, label_mode, 1.0), _ece(z, y, label_mode, t)
    assert after < 0.02 < before and after < before / 3, (before, after)
    # the served transform: probabilities in, temperature-scaled probabilities out
    probs = from_logits(z[:50], label_mode)
    np.testing.assert_allclose(scale(probs, t, label_mode), from_logits(z[:50] / t, label_mode))


def test_fit_record_reports_before_and_after() -> None:
    z, y = _overconfident("single", 2.0, n=4000)
    params = calibrate.CalibrateParams(temperature=True, threshold="max_f1")
    record = calibrate.fit(z, y, "single", list("abcde"), params)
    assert record["temperature"] == pytest.approx(2.0, abs=0.25) and record["fitted"]
    assert record["val"]["nll_after"] < record["val"]["nll_before"]
    assert record["val"]["ece_after"] < record["val"]["ece_before"]
    assert record["thresholds"] is None  # single-label with 5 classes: argmax, no cut-off
    off = calibrate.fit(z, y, "single", list("abcde"), calibrate.CalibrateParams())
    assert off["temperature"] == 1.0 and not off["fitted"]


# Ten validation scores, highest first, and whether each image holds the class:
SCORES = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
TRUTH = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], bool)  # 5 positives


@pytest.mark.parametrize(
    ("target", "level", "threshold", "precision", "recall"),
    [
        # F1 by cut: 0.95 1/3, 0.9 4/7, 0.8 1/2, 0.7 2/3, 0.6 4/5, 0.5 8/11, 0.3 10/13 ...
        ("max_f1", 0.9, 0.6, 0.8, 0.8),
        # precision 1 down to 0.9, then 2/3: the lowest cut keeping 0.9 is 0.9 itself
        ("min_precision", 0.9, 0.9, 1.0, 0.4),
        ("min_precision", 0.75, 0.6, 0.8, 0.8),  # 0.6: 4 of 5 right; 0.5: 4 of 6
        # recall 0.8 first at 0.6; 1.0 only at 0.3
        ("min_recall", 0.8, 0.6, 0.8, 0.8),
        ("min_recall", 0.9, 0.3, 5 / 8, 1.0),
    ],
)
def test_threshold_for_each_target(target, level, threshold, precision, recall) -> None:
    picked = calibrate.pick_threshold(SCORES, TRUTH, target, level)
    assert picked["threshold"] == threshold and picked["reached"]
    assert picked["precision"] == pytest.approx(precision, abs=1e-6)
    assert picked["recall"] == pytest.approx(recall, abs=1e-6)


def test_threshold_edge_cases() -> None:
    # precision 0.99 is never reached: the cut of the best precision, flagged
    assert calibrate.pick_threshold(SCORES, TRUTH, "min_precision", 1.0)["threshold"] == 0.9
    unreachable = calibrate.pick_threshold(SCORES[2:], TRUTH[2:], "min_precision", 0.99)
    assert not unreachable["reached"]
    # tied scores are one cut: 0.5 and 0.5 are both in or both out
    tied = calibrate.pick_threshold(
        np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0], bool), "max_f1", 0
    )
    assert tied["threshold"] == 0.5 and tied["precision"] == 0.5
    no_positives = calibrate.pick_threshold(SCORES, np.zeros(10, bool), "max_f1", 0.9)
    assert no_positives["threshold"] == 0.5 and not no_positives["reached"]
    with pytest.raises(ValueError, match="max_f1"):
        calibrate.pick_threshold(SCORES, TRUTH, "best", 0.9)


def test_decide_applies_cut_offs() -> None:
    multi = np.array([[0.3, 0.7], [0.45, 0.2]])
    assert decide(multi, "multi").tolist() == [[False, True], [False, False]]  # 0.5
    assert decide(multi, "multi", {0: 0.4, 1: 0.8}).tolist() == [[False, False], [True, False]]
    binary = np.array([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]])
    assert decide(binary, "single").argmax(axis=1).tolist() == [0, 0, 1]
    assert decide(binary, "single", {1: 0.25}).argmax(axis=1).tolist() == [1, 1, 1]
    assert decide(binary, "single", {1: 0.9}).argmax(axis=1).tolist() == [0, 0, 0]


def test_calibration_json_errors_name_the_field(tmp_path: Path) -> None:
    assert Postprocess.load(tmp_path) is None  # an older bundle: served unchanged
    (tmp_path / "calibration.json").write_text(json.dumps({"label_mode": "single"}))
    with pytest.raises(ValueError, match='calibration.json: "temperature" must be a positive'):
        Postprocess.load(tmp_path)
    bad = {"label_mode": "multi", "temperature": 1.5, "thresholds": {"classes": [{"index": 0}]}}
    (tmp_path / "calibration.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match='"thresholds.classes" must be a list'):
        Postprocess.load(tmp_path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny single-label mlp bundle exported through the real stages, calibrate on."""
    project = tmp_path_factory.mktemp("calibrate") / "project"
    project.mkdir()
    return build_bundle(project, calibrate=True)


@pytest.mark.train
def test_a_calibrated_bundle_serves_scaled_scores_on_both_backends(bundle: Path) -> None:
    record = json.loads((bundle / "calibration.json").read_text())
    assert record["fitted"] and record["temperature"] != 1.0
    assert record["val"]["images"] > 0 and record["test"]["images"] == 12
    assert record["val"]["nll_after"] <= record["val"]["nll_before"]
    metrics = json.loads((bundle / "metrics.json").read_text())["calibration"]
    assert metrics["temperature"] == record["temperature"]
    assert "temperature-scaled" in (bundle / "MODEL_CARD.md").read_text()
    rng = np.random.default_rng(3)
    batch = np.stack([pattern(c % 3, rng)[..., None] for c in range(9)])
    served = {}
    for backend in ("onnx", "tf"):
        predictor = serving.load(bundle, backend)
        raw, served[backend] = predictor.model_probs(batch), predictor.predict(batch)
        assert not np.allclose(served[backend], raw, atol=1e-3)  # calibrated, not the model's
        expected = scale(raw, record["temperature"], "single")
        np.testing.assert_allclose(served[backend], expected, rtol=0, atol=1e-6)
        assert (served[backend].argmax(axis=1) == raw.argmax(axis=1)).all()
        np.testing.assert_allclose(served[backend].sum(axis=1), 1.0, atol=1e-5)
    assert_same_model(served["tf"], served["onnx"])
    # evaluate's samples.json holds the served scores (the server's self-check replays them)
    samples = json.loads((bundle.parent / "eval/samples.json").read_text())["images"]
    predictor = serving.load(bundle, "onnx")
    first = predictor.prepare(base64.b64decode(samples[0]["data"]))
    assert_same_model(samples[0]["probs"], predictor.predict(first[None])[0])  # evaluate ran tf


@pytest.mark.train
def test_a_bundle_without_calibration_json_serves_the_model(bundle: Path, tmp_path: Path) -> None:
    old = shutil.copytree(bundle, tmp_path / "old", ignore=shutil.ignore_patterns("saved_model"))
    (old / "calibration.json").unlink()
    batch = np.stack([pattern(c, np.random.default_rng(c))[..., None] for c in range(3)])
    for backend in ("onnx", "tf"):
        predictor = serving.load(old, backend)
        assert predictor.postprocess is None
        np.testing.assert_array_equal(predictor.predict(batch), predictor.model_probs(batch))
