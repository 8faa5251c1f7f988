"""Input validation at serving: the training statistics export writes (input_stats.json), the
out-of-distribution score, and real servers that report it, count it in /metrics, refuse it
with 422 over the threshold, and serve a bundle without statistics."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import b64, call, encode, image_input, multipart, running, shared_bundle

from deployment.server import ood
from models.common import input_stats, serving

pytestmark = pytest.mark.slow
STATS = ood.InputStats(  # what load makes of a dataset of 100x50 L images of mid-gray
    ranges={
        "long_side": (100.0, 100.0, 0.0),
        "short_side": (50.0, 50.0, 0.0),
        "brightness": (100.0, 140.0, 10.0),
        "contrast": (20.0, 40.0, 5.0),
    },
    modes=("L",),
    top_p1=0.6,
    stored_size=(8, 8),
    gray_stats=serving.gray_stats,
)
INSIDE = {"long_side": 100, "short_side": 50, "brightness": 120.0, "contrast": 30.0, "mode": "L"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_bundle(tmp_path_factory)


def test_export_writes_the_training_statistics(bundle: Path) -> None:
    stats = json.loads((bundle / "input_stats.json").read_text())
    assert (stats["images"], stats["of"]) == (24, 24)  # 8 per class: all, under the 2,000
    assert stats["stored_size"] == [8, 8] and stats["channels"] == 1
    assert stats["modes"] == {"L": 24}
    assert stats["statistics"]["long_side"]["p1"] == stats["statistics"]["long_side"]["p99"] == 8
    # conftest.pattern: noise in 0..39 and a 255 stroke of 8 of the 64 pixels
    bright = stats["statistics"]["brightness"]
    assert 40 < bright["min"] <= bright["p1"] <= bright["p50"] <= bright["p99"] <= bright["max"]
    assert bright["max"] < 70 and stats["statistics"]["contrast"]["p50"] > 60
    assert stats["top_score"]["images"] == 12 and 0 < stats["top_score"]["p1"] < 1
    tops = [json.loads(line)["top"][0][1] for line in _predictions(bundle)]
    assert stats["top_score"]["p1"] <= min(tops) < stats["top_score"]["p1"] + 1e-4


def _predictions(bundle: Path) -> list[str]:
    return (bundle.parent / "eval/predictions.jsonl").read_text().splitlines()


def test_in_range_scores_zero_and_each_check_names_itself() -> None:
    assert ood.score(STATS, INSIDE, 0.9) == {"score": 0.0, "reasons": []}
    white = ood.score(STATS, {**INSIDE, "brightness": 255.0, "contrast": 0.0}, 0.9)
    assert [r["check"] for r in white["reasons"]] == ["brightness", "contrast"]  # worst first
    assert white["reasons"][0] == {  # 11.5 units of 10 gray levels above: 11.5 / 12.5
        "check": "brightness",
        "value": 255.0,
        "range": [100.0, 140.0],
        "score": 0.92,
    }
    assert white["score"] == 0.92
    twice = ood.score(STATS, {**INSIDE, "long_side": 200}, 0.9)  # one doubling: 0.5
    assert twice["score"] == 0.5 and twice["reasons"][0]["check"] == "long_side"
    rgb = ood.score(STATS, {**INSIDE, "mode": "RGB"}, 0.9)
    assert rgb["reasons"] == [{"check": "mode", "value": "RGB", "seen": ["L"], "score": 0.5}]
    unsure = ood.score(STATS, INSIDE, 0.3)  # half way from the test 1st percentile to 0
    assert unsure["score"] == 0.5 and unsure["reasons"][0]["check"] == "top_score"
    assert ood.score(STATS, {"brightness": 120.0}, None)["score"] == 0  # unmeasured: unchecked


def test_refusal_names_the_statistic_and_its_training_range() -> None:
    results = [
        ood.score(STATS, INSIDE, 0.9),
        ood.score(STATS, {**INSIDE, "brightness": 255.0}, 0.9),
    ]
    assert ood.refusal(results, 0) is None and ood.refusal(results, 0.95) is None
    why = ood.refusal(results, 0.5)
    assert why.startswith("image 1 of 2 is out of distribution (OOD score 0.9200")
    assert "brightness 255 is outside the training range 100..140 (1st to 99th percentile)" in why


def test_tensors_at_the_stored_size_skip_the_size_and_mode_checks() -> None:
    image = np.full((8, 8, 1), 120, np.uint8)
    assert ood.measure(image, None, STATS) == {"brightness": 120.0, "contrast": 0.0}
    big = ood.measure(np.full((16, 32, 1), 120, np.uint8), None, STATS)
    assert (big["long_side"], big["short_side"]) == (32, 16) and "mode" not in big
    uploaded = ood.measure(image, (100, 50, "P"), STATS)
    assert uploaded["mode"] == "P" and uploaded["long_side"] == 100


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 3), (300, 200, 3), (1000, 10, 1)])
def test_gray_stats_is_the_mean_and_deviation_of_gray(shape: tuple[int, ...]) -> None:
    """Export and the server share one measure (the bundle's serving.gray_stats; the import
    graph test finds any copy): on a small image it is numpy's own mean and std."""
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert input_stats.gray_stats is serving.gray_stats
    if shape[0] * shape[1] <= serving.MAX_VALUES:  # the whole image
        gray = image.mean(axis=2)
        assert serving.gray_stats(image) == pytest.approx((gray.mean(), gray.std()))


def _white(side: int = 3000) -> bytes:
    return encode(Image.new("L", (side, side), 255))


def _test_files(bundle: Path) -> list[bytes]:
    raw = bundle.parents[3] / "datasets/raw/tiny/test"
    return [f.read_bytes() for f in sorted(raw.glob("*.png"))]


def _metrics(srv) -> dict[str, float]:
    text = call(srv, "GET", "/metrics")[1].decode()
    return {
        k: float(v)
        for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line[0] != "#")
    }


def test_server_scores_refuses_over_the_threshold_and_counts(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("serve:\n  ood_threshold: 0.5\n")  # the param
    with running(tmp_path, "--bundle", bundle, "--backend", "onnx") as srv:
        infer = f"/v2/models/{srv.name}/infer"
        tests = _test_files(bundle)
        scores = []
        for data in tests:  # the test split: in distribution
            status, body = call(srv, "POST", "/predict", data, {"Content-Type": "image/png"})
            assert status == 200, body
            scores.append(body["ood"]["score"])
        assert np.median(scores) == 0 and max(scores) < 0.5, scores
        status, body = call(srv, "POST", infer, image_input(*tests[:3]))
        assert status == 200 and body["parameters"]["ood_score"] == scores[:3]

        # another mode, the same pixels: flagged, at 0.5 (not over the threshold)
        rgb = encode(Image.open(io.BytesIO(tests[0])).convert("RGB"))
        status, body = call(srv, "POST", "/predict", *multipart(rgb))
        assert status == 200 and body["ood"]["score"] == 0.5
        assert body["ood"]["reasons"][0] == {
            "check": "mode",
            "value": "RGB",
            "seen": ["L"],
            "score": 0.5,
        }

        # a huge all-white image: 422 naming brightness and its training range
        status, body = call(srv, "POST", "/predict", _white(), {"Content-Type": "image/png"})
        assert status == 422, body
        assert "brightness 255 is outside the training range" in body["error"]
        assert "long_side 3000 is outside the training range 8..8" in body["error"]
        assert body["model_version"]
        status, body = call(srv, "POST", infer, image_input(tests[0], _white(500)))
        assert status == 422 and body["error"].startswith("image 1 of 2 is out of distribution")
        v1 = {"instances": [{"b64": b64(_white(100))}]}
        assert call(srv, "POST", f"/v1/models/{srv.name}:predict", v1)[0] == 422

        # the server keeps serving; /metrics counted every image and the refusals
        assert call(srv, "POST", "/predict", tests[1], {"Content-Type": "image/png"})[0] == 200
        seen = _metrics(srv)
        assert seen["serve_ood_refused_total"] == 3
        assert seen['serve_ood_images_total{reason="brightness"}'] >= 3
        assert seen['serve_ood_images_total{reason="mode"}'] >= 1
        assert seen['serve_requests_total{method="POST",route="/predict",status="422"}'] == 1
        scored = len(tests) + 3 + 1 + 1 + 2 + 1 + 1  # every image of every request
        assert seen["serve_ood_score_count"] == scored
        assert seen['serve_ood_score_bucket{le="0.0"}'] >= len(tests) / 2

        # a pixels tensor at the stored size (answered by the door, door.py): its sides
        # are what the model reads, unchecked; its pixels score as the file's did
        pixels = np.asarray(Image.open(io.BytesIO(tests[0])))[None, :, :, None]
        tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape)}
        status, body = call(
            srv, "POST", infer, {"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}
        )
        assert status == 200 and body["parameters"]["ood_score"] == [scores[0]]
        white = {**tensor, "data": [255] * pixels.size}
        status, body = call(srv, "POST", infer, {"inputs": [white]})
        assert status == 422 and "brightness 255 is outside" in body["error"]


def test_a_bundle_without_statistics_serves_with_no_score(bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "bundle"
    shutil.copytree(bundle, old)
    (old / "input_stats.json").unlink()  # a bundle exported before input validation
    with running(tmp_path, "--bundle", old, "--backend", "onnx", "--ood-threshold", "0.1") as srv:
        status, body = call(srv, "POST", "/predict", _white(), {"Content-Type": "image/png"})
        assert status == 200 and body["ood"] is None
        status, body = call(srv, "POST", f"/v2/models/{srv.name}/infer", image_input(_white()))
        assert status == 200 and "parameters" not in body
        status, body = call(
            srv, "POST", f"/v1/models/{srv.name}:predict", {"instances": [{"b64": b64(_white())}]}
        )
        assert status == 200 and "ood_score" not in body
        assert "serve_ood_score_count 0.0" in call(srv, "GET", "/metrics")[1].decode()
