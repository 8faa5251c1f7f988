"""Drift monitoring: the PSI math, the test-set reference export writes, the sliding window
and its gauges, and a real server whose skewed traffic shows in serve_drift_psi."""

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from deployment.server.drift import EPSILON, DriftCollector, DriftWindow, psi
from models.common.reference import CONFIDENCE_BINS, Reference, confidence_bin

LABELS = ["a", "b", "c"]
PREDICTIONS = {  # evaluate's predictions.json: 4 test images, 3 classes
    "categories": LABELS,
    "predictions": {
        "test/0.png": [0.9, 0.05, 0.05],
        "test/1.png": [0.2, 0.7, 0.1],
        "test/2.png": [0.1, 0.1, 0.8],
        "test/3.png": [0.35, 0.33, 0.32],
    },
}
PER_CLASS = [{"class": c, "support": n, "f1": 1.0} for c, n in zip(LABELS, (2, 1, 1), strict=True)]


def reference(per_class: list[dict] | None = None, batches: int = 1) -> dict:
    """What evaluate writes as reference.json for PREDICTIONS, streamed in `batches`."""
    acc = Reference(LABELS)
    for rows in np.array_split(np.array(list(PREDICTIONS["predictions"].values())), batches):
        acc.update(rows)
    return acc.result(per_class)


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0
    assert psi([20, 30, 50], [0.2, 0.3, 0.5]) == pytest.approx(0, abs=1e-12)  # counts work


def test_psi_known_values() -> None:
    # (0.5 - 0.25) ln(0.5 / 0.25) + (0.5 - 0.75) ln(0.5 / 0.75) = 0.2747
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.2747, abs=1e-4)
    # An empty live bin is floored at EPSILON: large but finite.
    one_class = 0.5 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    assert psi([10, 0], [0.5, 0.5]) == pytest.approx(one_class)
    assert math.isnan(psi([0, 0], [0.5, 0.5]))


def test_reference_of_test_predictions() -> None:
    ref = reference(PER_CLASS)
    assert ref == reference(PER_CLASS, batches=3)  # streamed as evaluate does: the same
    assert ref["labels"] == LABELS and ref["images"] == 4
    assert ref["predicted"] == [0.5, 0.25, 0.25]  # top-1 of the 4 rows: a, b, c, a
    assert ref["true"] == [0.5, 0.25, 0.25]
    conf = ref["confidence"]
    assert conf["mean"] == pytest.approx((0.9 + 0.7 + 0.8 + 0.35) / 4)
    assert conf["bins"] == list(CONFIDENCE_BINS) and sum(conf["histogram"]) == pytest.approx(1)
    # 0.35 -> (0.3, 0.4]; 0.7 -> (0.6, 0.7]; 0.8 -> (0.7, 0.8]; 0.9 -> (0.8, 0.9]
    assert [i for i, f in enumerate(conf["histogram"]) if f] == [3, 6, 7, 8]
    assert confidence_bin(0.1) == 0 and confidence_bin(1.0) == len(CONFIDENCE_BINS) - 1
    assert reference()["true"] is None
    with pytest.raises(ValueError, match="per_class"):
        reference(PER_CLASS[:2])


def _bundle(tmp_path: Path, with_reference: bool = True) -> SimpleNamespace:
    if with_reference:
        (tmp_path / "reference.json").write_text(json.dumps(reference(PER_CLASS)))
    return SimpleNamespace(path=tmp_path, labels=LABELS)


def _gauges(window: DriftWindow, model: str = "m") -> dict[str, float]:
    """The collector's gauges for `window` served as `model` (the label dropped)."""
    registry = CollectorRegistry()
    registry.register(DriftCollector({model: window}))
    lines = generate_latest(registry).decode().splitlines()
    found = {k: float(v) for k, v in (line.split() for line in lines if line[0] != "#")}
    suffix = f'{{model="{model}"}}'
    assert all(k.endswith(suffix) for k in found), found
    return {k.removesuffix(suffix): v for k, v in found.items()}


def test_window_gauges_follow_the_last_predictions(tmp_path: Path) -> None:
    bundle, window = _bundle(tmp_path), DriftWindow(4)
    window.reset(bundle)
    empty = _gauges(window)
    assert empty["serve_drift_window_predictions"] == 0 and math.isnan(empty["serve_drift_psi"])
    window.observe(bundle, np.array(list(PREDICTIONS["predictions"].values())))
    same = _gauges(window)  # the test set itself: no drift at all
    assert same["serve_drift_window_predictions"] == 4
    assert same["serve_drift_psi"] == pytest.approx(0, abs=1e-6)
    assert same["serve_confidence_psi"] == pytest.approx(0, abs=1e-6)
    assert same["serve_confidence_shift"] == pytest.approx(0, abs=1e-6)
    window.observe(bundle, np.tile([[0.05, 0.05, 0.9]], (3, 1)))  # evicts the 3 oldest
    skewed = _gauges(window)
    assert skewed["serve_drift_window_predictions"] == 4  # the window's size, no more
    assert skewed["serve_drift_psi"] > 0.25  # 3 of 4 are "c"; the test set had 1 of 4
    assert skewed["serve_confidence_shift"] == pytest.approx((0.35 + 2.7) / 4 - 0.6875)
    window.observe(SimpleNamespace(path=tmp_path, labels=LABELS), np.eye(3))  # another bundle
    assert _gauges(window) == skewed  # a request finishing on the old model: not counted
    window.reset(bundle)  # a hot reload
    assert _gauges(window)["serve_drift_window_predictions"] == 0


def test_no_reference_means_no_drift_gauges(tmp_path: Path) -> None:
    bundle, window = _bundle(tmp_path, with_reference=False), DriftWindow(10)
    assert "no reference" in window.reset(bundle)
    window.observe(bundle, np.eye(3))
    assert _gauges(window) == {"serve_drift_window_predictions": 3}
    (tmp_path / "reference.json").write_text(json.dumps({**reference(), "labels": []}))
    assert "no reference" in window.reset(bundle)  # another model's reference: ignored


def test_swap_resets_the_window(tmp_path: Path) -> None:
    from deployment.server.lifecycle import State
    from deployment.server.options import Config

    state = State(Config(bundle=None, drift_window=8))
    first, second = _bundle(tmp_path), _bundle(tmp_path)
    for bundle, version in ((first, "1" * 12), (second, "2" * 12)):
        bundle.name, bundle.version, bundle.backend = "cell", version, "onnx"
        bundle.serving, bundle.dataset = SimpleNamespace(__file__="serving.py"), "d"
    state.models._swap("d", first, "checked", time.perf_counter())
    state.metrics.observe_predictions(np.eye(3), first)
    assert _gauges(state.metrics.drift("d"), "d")["serve_drift_window_predictions"] == 3
    state.models._swap("d", second, "checked", time.perf_counter())
    state.metrics.observe_predictions(np.eye(3), first)  # in flight on the old bundle
    assert _gauges(state.metrics.drift("d"), "d")["serve_drift_window_predictions"] == 0
    assert state.served.find("cell") is second and state.served.find("d") is second


@pytest.mark.slow
def test_skewed_traffic_raises_drift_psi_on_a_real_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from servers import call, running, shared_bundle

    bundle = shared_bundle(tmp_path_factory)
    root = tmp_path_factory.mktemp("drift")
    with running(
        root, "--bundle", bundle, "--drain-seconds", "0", "--drift-window", "20"
    ) as server:
        before = _scrape(server)
        assert before["serve_drift_window_predictions"] == 0
        assert math.isnan(before["serve_drift_psi"])  # a reference, but nothing to compare
        one = np.full((25, 8, 8, 1), 17, np.uint8)  # one image 25 times: one predicted class
        body = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(one.shape)}]}
        body["inputs"][0]["data"] = one.ravel().tolist()
        status, answer = call(server, "POST", f"/v2/models/{server.name}/infer", body)
        assert status == 200, answer
        after = _scrape(server)
    assert after["serve_drift_window_predictions"] == 20  # --drift-window
    assert after["serve_drift_psi"] > 0.25  # significant: the reference spreads over 3 classes
    assert math.isfinite(after["serve_confidence_shift"])


def _scrape(server) -> dict[str, float]:
    from servers import call

    text = call(server, "GET", "/metrics")[1].decode()
    model = f'{{model="{server.name}"}}'  # one served model: the --bundle's cell
    return {
        line.split()[0].removesuffix(model): float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("serve_drift", "serve_confidence_psi", "serve_confidence_shift"))
    }
