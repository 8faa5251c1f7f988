"""The real server over real HTTP: a tiny bundle built through the real stages, served by
`python -m deployment.server.serve` in a subprocess, called with urllib and tritonclient.http."""

import hashlib
import http.client
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CLASSES,
    assert_same_model,
    stop_process,
)
from PIL import Image
from servers import (
    READY_TIMEOUT,
    Server,
    b64,
    call,
    encode,
    image_input,
    multipart,
    png,
    running,
    shared_bundle,
    start,
)

from deployment.release import feedback_export

pytestmark = pytest.mark.slow
MAX_BODY = 1 << 20  # the test server's limits, small so the 413 cases stay cheap
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    bundle = shared_bundle(tmp_path_factory)
    flags = ["--bundle", bundle, "--max-body-bytes", MAX_BODY, "--max-pixels", MAX_PIXELS]
    flags += ["--drain-seconds", 0]  # SIGTERM: test_reload
    flags += ["--backend", "tf"]  # onnx loads in ~0.1 s: too fast to see the server not ready
    srv = start(root, *map(str, flags), feedback=root / "feedback", wait=False)
    proc, log = srv.proc, srv.log
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while (status := call(srv, "GET", "/v2/health/ready")[0]) != 200:
            if status and not srv.before_ready:  # listening, model not loaded yet
                live = call(srv, "GET", "/v2/health/live")[0]
                infer = call(srv, "POST", f"/v2/models/{srv.name}/infer", {})[0]
                srv.before_ready.append((status, live, infer))
            assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield srv
    finally:
        stop_process(proc)


def test_not_ready_until_loaded_and_warmed_up(server: Server) -> None:
    # The server listens at once and loads TF and the bundle in the background: ~5 s.
    assert server.before_ready == [(503, 200, 503)]
    log = server.log.read_text()
    assert "serve: ready" in log and "Traceback" not in log


def test_serves_the_bundles_own_code_and_metadata(server: Server) -> None:
    lines = [line for line in server.log.read_text().splitlines() if "serve: ready" in line]
    serving = Path(lines[0].split("serving module ")[1])
    assert serving.is_relative_to(server.bundle.resolve() / "code")  # not the repo's models/
    lineage = json.loads((server.bundle / "lineage.json").read_text())  # a real export
    assert lineage["cell"] == server.name
    status, meta = call(server, "GET", f"/v2/models/{server.name}")
    assert status == 200 and meta["name"] == server.name
    assert meta["parameters"]["labels"] == list(CLASSES)
    assert meta["inputs"][1] == {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 1]}
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    v = meta["model_version"]
    assert meta["versions"] == [v] and len(v) == 12
    for path in ("/v2/health/live", "/v2", f"/v2/models/{server.name}/versions/{v}/ready"):
        status, body = call(server, "GET", path)
        assert status == 200 and body["model_version"] == v, path
    status, body = call(server, "GET", f"/v1/models/{server.name}")
    assert body["model_version_status"][0] == {
        "version": v,
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_v2_json_infer_matches_uint8_and_v1(server: Server) -> None:
    images = [png(0), png(1, size=13), png(2, mode="RGB")]  # any size and mode
    status, body = call(server, "POST", f"/v2/models/{server.name}/infer", image_input(*images))
    assert status == 200, body
    out = body["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [3, 3]
    probs = np.array(out["data"]).reshape(3, 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    pixels = np.asarray(Image.open(io.BytesIO(images[0])))[None, :, :, None]
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape)}
    status, body = call(
        server,
        "POST",
        f"/v2/models/{server.name}/infer",
        {"inputs": [{**tensor, "data": pixels.ravel().tolist()}]},
    )
    assert status == 200 and np.allclose(body["outputs"][0]["data"], probs[0], atol=1e-6)
    instances = [{"b64": b64(i)} for i in images]
    status, body = call(
        server, "POST", f"/v1/models/{server.name}:predict", {"instances": instances}
    )
    assert status == 200 and np.allclose(body["predictions"], probs, atol=1e-6)


def test_tritonclient_json_binary_and_classification(server: Server) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=30)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(server.name)
    assert client.get_model_metadata(server.name)["inputs"][0]["datatype"] == "BYTES"
    images = [png(0), png(1), png(2, size=20)]
    results = {}
    for binary in (False, True):  # JSON base64 text, then the binary tensor extension
        encoded = [i if binary else b64(i).encode() for i in images]
        tensor = triton.InferInput("image", [3], "BYTES")
        tensor.set_data_from_numpy(np.array(encoded, dtype=object), binary_data=binary)
        out = triton.InferRequestedOutput("probabilities", binary_data=binary)
        results[binary] = client.infer(server.name, [tensor], outputs=[out])
    probs = results[False].as_numpy("probabilities")
    assert probs.shape == (3, 3) and np.allclose(results[True].as_numpy("probabilities"), probs)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(i))) for i in images[:2]])[..., None]
    for binary in (False, True):
        tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        result = client.infer(server.name, [tensor])  # no outputs named: binary outputs
        assert np.allclose(result.as_numpy("probabilities"), probs[:2], atol=1e-6)
    tensor = triton.InferInput("image", [3], "BYTES")
    tensor.set_data_from_numpy(np.array([b64(i).encode() for i in images], dtype=object), False)
    for binary in (False, True):
        out = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
        top = client.infer(server.name, [tensor], outputs=[out]).as_numpy("probabilities")
        assert top.shape == (3, 2)
        for row, p in zip(top, probs, strict=True):
            best = row[0].decode() if binary else row[0]  # JSON gives str, binary bytes
            score, index, label = best.split(":")
            assert int(index) == p.argmax() and label == CLASSES[p.argmax()]
            assert abs(float(score) - p.max()) < 1e-5
    with pytest.raises(InferenceServerException) as err:
        client.infer("no-such-model", [tensor])
    assert err.value.status() == "404"
    client.close()


def _infer(srv: Server, body) -> tuple[int, object]:
    return call(srv, "POST", f"/v2/models/{srv.name}/infer", body)


def _pixels(data, shape=(1, 2, 2, 1), datatype="UINT8") -> dict:
    return {
        "inputs": [{"name": "pixels", "datatype": datatype, "shape": list(shape), "data": data}]
    }


BOMB = Image.new("L", (1200, 1000))  # 1.2 Mpx > MAX_PIXELS, a few KB as PNG
TRUNCATED = png(size=64)[: len(png(size=64)) // 2]  # a valid header, half the pixel data
GOOD = image_input(png())
RAW_PIXEL = b'{"inputs":[{"name":"pixels","datatype":"UINT8","shape":[1],"data":[%s]}]}'
BAD_INFER = {  # case: (body, status, a word the error must contain)
    "malformed JSON": (b'{"inputs": [', 400, "malformed JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "missing inputs": ({"outputs": []}, 400, "'inputs'"),
    "unknown input": ({"inputs": [{**GOOD["inputs"][0], "name": "x"}]}, 400, "unknown input"),
    "extra input": ({"inputs": GOOD["inputs"] + _pixels([0] * 4)["inputs"]}, 400, "extra inputs"),
    "wrong datatype": (_pixels([0.5, 0, 0, 0], datatype="FP32"), 400, "must be UINT8"),
    "shape x datatype != data": (_pixels([0, 0, 0]), 400, "needs 4 values"),
    "values out of range": (_pixels([0, 0, 0, 256]), 400, "0..255"),
    "wrong channels": (_pixels([0] * 12, shape=(1, 2, 2, 3)), 400, "shape must be"),
    "NaN": (RAW_PIXEL % b"NaN", 400, "NaN"),
    "Inf": (RAW_PIXEL % b"1e999", 400, "Inf"),
    "not base64": ({"inputs": [{**GOOD["inputs"][0], "data": ["%%%"]}]}, 400, "base64"),
    "non-image bytes": (image_input(b"hello, not an image"), 400, "not a decodable image"),
    "truncated image": (image_input(TRUNCATED), 400, "truncated"),
    "unknown output": ({**GOOD, "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    "pixel bomb": (image_input(encode(BOMB)), 413, "1200x1000"),
    "pixel tensor over limit": (_pixels([0], shape=(1, 1001, 1000, 1)), 413, "--max-pixels"),
}


@pytest.mark.parametrize("case", BAD_INFER)
def test_bad_infer_requests_get_exact_statuses(server: Server, case: str) -> None:
    body, expected, word = BAD_INFER[case]
    status, answer = _infer(server, body)
    assert status == expected and word in answer["error"], answer
    assert answer["model_version"]
    assert _infer(server, image_input(png()))[0] == 200  # still serving


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope/infer",
        "/v2/models/tiny-mlp-quick/versions/000000000000/infer",
        "/v2/models/..%2F..%2Fetc%2Fpasswd/infer",
        "/v1/models/nope:predict",
    ],
)
def test_unknown_model_or_version_is_404(server: Server, path: str) -> None:
    status, answer = call(server, "POST", path, image_input(png()))
    assert status == 404 and answer["error"]  # %2F is decoded: no route, no file read
    assert _infer(server, image_input(png()))[0] == 200


def _raw_post(srv: Server, path: str, headers: dict, chunks: list[bytes]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        for chunk in chunks:
            conn.send(chunk)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_body_over_limit_is_413_before_reading(server: Server) -> None:
    path = f"/v2/models/{server.name}/infer"
    # Declares 100 MiB but sends 2 bytes: only a server that refuses before reading answers.
    status, answer = _raw_post(server, path, {"Content-Length": str(100 << 20)}, [b"{}"])
    assert status == 413 and "over" in answer["error"]
    chunk = b"a" * (256 << 10)  # chunked, no Content-Length: counted as it arrives
    frames = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 5 + [b"0\r\n\r\n"]
    status, answer = _raw_post(server, path, {"Transfer-Encoding": "chunked"}, frames)
    assert status == 413 and "over" in answer["error"]
    assert _infer(server, image_input(png()))[0] == 200


def test_predict_page_and_feedback(server: Server) -> None:
    status, page = call(server, "GET", "/")
    assert status == 200 and b"/predict" in page and b"/feedback" in page
    status, answer = call(server, "POST", "/predict", *multipart(png(1)))
    assert status == 200, answer
    assert answer["label"] == answer["top_k"][0]["label"] and len(answer["top_k"]) == 3
    assert answer["score"] == max(t["score"] for t in answer["top_k"])
    rid, label = answer["request_id"], answer["label"]
    assert call(server, "POST", "/predict", png(1), {"Content-Type": "image/png"})[0] == 200
    for body, headers, expected in (
        (b"text", {"Content-Type": "text/plain"}, 415),
        (b"{}", {"Content-Type": "application/json"}, 415),
        (*multipart(png(1)[:50]), 400),
        (*multipart(png(1), field="other"), 400),
        (*multipart(bytes(1000)), 400),  # raw pixels are not an encoded image
    ):
        status, error = call(server, "POST", "/predict", body, headers)
        assert status == expected and error["error"], error
    _check_feedback(server, rid, label, png(1))


def _row(server: Server, rid: str) -> dict | None:
    """The feedback database's row for rid, read with sqlite3 itself."""
    with sqlite3.connect(server.feedback / "feedback.sqlite3") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM feedback WHERE request_id = ?", (rid,)).fetchone()
        return None if row is None else dict(row)


def _check_feedback(server: Server, rid: str, label: str, upload: bytes) -> None:
    post = lambda body: call(server, "POST", "/feedback", body)  # noqa: E731
    wrong = next(c for c in CLASSES if c != label)
    status, answer = post({"request_id": rid, "true_label": label})
    assert status == 200 and answer["record"]["correct"] is True
    first = _row(server, rid)
    assert {k: first[k] for k in ("true_label", "split", "file", "image", "correct")} == {
        k: answer["record"][k] for k in ("true_label", "split", "file", "image")
    } | {"correct": 1}
    assert post({"request_id": rid, "true_label": label}) == (status, answer)
    assert _row(server, rid) == first  # idempotent
    status, answer = post({"request_id": rid, "true_label": wrong})
    assert status == 200 and answer["record"]["correct"] is False  # the last answer wins
    assert _row(server, rid) == first | {"true_label": wrong, "correct": 0}
    for body, expected in (
        ({"request_id": rid, "true_label": "no-such-class"}, 400),
        ({"request_id": uuid.uuid4().hex, "true_label": label}, 404),
        ({"request_id": "../../../etc/passwd", "true_label": label}, 400),
        ({"request_id": rid}, 400),
        ({"request_id": rid, "true_label": label, "extra": 1}, 400),
    ):
        status, answer = post(body)
        assert status == expected and answer["error"], (body, answer)
    # the image is stored once, under its content's sha256; the first record goes to test
    image = f"images/{hashlib.sha256(upload).hexdigest()}.png"
    assert first["split"] == "test" and first["file"] == f"test/{rid}.png"
    assert first["image"] == image and (server.feedback / image).read_bytes() == upload
    files = lambda: sorted(  # noqa: E731
        p.relative_to(server.feedback).as_posix()
        for p in server.feedback.rglob("*")
        if not p.name.startswith("feedback.sqlite3")
    )
    assert files() == ["images", image]  # no dataset until it is exported
    assert feedback_export.export(server.feedback) == 0  # nor until it is accepted
    status, answer = call(server, "POST", f"/review/{rid}", {"decision": "accept"})
    assert status == 200 and answer["record"]["review"] == "accepted", answer
    assert feedback_export.export(server.feedback) == 1
    assert files() == ["images", image, "test", f"test/{rid}.png", "test/groundtruth.csv"]
    assert (server.feedback / f"test/{rid}.png").read_bytes() == upload
    assert (
        server.feedback / "test/groundtruth.csv"
    ).read_text() == f"filename,label\n{rid}.png,{wrong}\n"


def _samples(server: Server) -> dict[str, float]:
    """/metrics as {series: value}."""
    text = call(server, "GET", "/metrics")[1].decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {series: float(value) for series, value in pairs}


def test_metrics_count_requests_and_predictions(server: Server) -> None:
    """Exact increments for this test's own requests (the module's tests run in order on
    one worker, so nothing else reaches the server meanwhile)."""
    route = 'route="/v2/models/{name}/infer"'
    requests = {
        s: f'serve_requests_total{{method="POST",{route},status="{s}"}}' for s in (200, 400, 413)
    }
    requests[415] = 'serve_requests_total{method="POST",route="/predict",status="415"}'
    before = _samples(server)
    assert _infer(server, image_input(png(0), png(1, seed=3)))[0] == 200  # 2 predictions
    assert _infer(server, b"[1, 2]")[0] == 400
    assert _infer(server, _pixels([0], shape=(1, 1001, 1000, 1)))[0] == 413
    assert call(server, "POST", "/predict", b"text", {"Content-Type": "text/plain"})[0] == 415
    after = _samples(server)
    grew = {k: after[k] - before.get(k, 0.0) for k in after}
    assert {s: grew[key] for s, key in requests.items()} == {200: 1, 400: 1, 413: 1, 415: 1}
    assert grew["serve_prediction_confidence_count"] == 2
    classes = [k for k in after if k.startswith("serve_predicted_class_total{label=")]
    assert sum(grew[k] for k in classes) == 2 and len(classes) <= len(CLASSES)
    assert grew[f"serve_request_seconds_count{{{route}}}"] == 3
    version = call(server, "GET", "/v2")[1]["model_version"]
    assert after[f'serve_model_info{{name="{server.name}",version="{version}"}}'] == 1.0


RELOAD = """
import json, sys
import numpy as np
from deployment.server.bundle import BUNDLED_PACKAGES, load_bundle
first = load_bundle(sys.argv[1])
x = np.full((1, 8, 8, 1), 255, np.uint8)
before = first.predictor.predict(x)
second = load_bundle(sys.argv[2])
print(json.dumps({
    "first": first.serving.__file__, "second": second.serving.__file__,
    "first_still_predicts": bool(np.allclose(first.predictor.predict(x), before)),
    "same_weights": bool(np.allclose(second.predictor.predict(x), before)),
    "first_code_on_path": any(p.startswith(sys.argv[1]) for p in sys.path),
    "foreign": second.serving.foreign_modules(second.path / "code", BUNDLED_PACKAGES),
    "versions": [first.version, second.version],
}))
"""


def test_second_bundle_replaces_the_first_in_one_process(server: Server, tmp_path: Path) -> None:
    copy = shutil.copytree(server.bundle, tmp_path / "copy")  # same model, other code/
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(server.bundle.resolve()), str(copy.resolve())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert Path(got["first"]).is_relative_to(server.bundle.resolve() / "code")
    assert Path(got["second"]).is_relative_to(copy.resolve() / "code")
    assert got["first_still_predicts"] and got["same_weights"]
    assert not got["first_code_on_path"] and got["foreign"] == []
    assert got["versions"][0] == got["versions"][1]


@pytest.mark.parametrize(
    "body, word",
    [
        ({"instances": "x"}, "instances"),
        ({"instances": [{"b64": "%%%"}]}, "base64"),
        ({"instances": [{"b64": b64(b"not an image")}]}, "not a decodable image"),
        ({"instances": [{"b64": b64(png()), "extra": 1}]}, "each instance"),
    ],
)
def test_v1_bad_requests_are_400(server: Server, body: dict, word: str) -> None:
    status, answer = call(server, "POST", f"/v1/models/{server.name}:predict", body)
    assert status == 400 and word in answer["error"], answer
    instances = {"instances": [{"b64": b64(png())}]}
    assert call(server, "POST", f"/v1/models/{server.name}:predict", instances)[0] == 200


def test_v1_versions_status_and_predict(server: Server) -> None:
    version = call(server, "GET", "/v2")[1]["model_version"]
    base = f"/v1/models/{server.name}"
    status, body = call(server, "GET", f"{base}/versions/{version}")
    assert status == 200 and body["model_version_status"][0]["version"] == version
    assert body == call(server, "GET", base)[1]
    instances = {"instances": [{"b64": b64(png(label))} for label in range(3)]}
    status, body = call(server, "POST", f"{base}/versions/{version}:predict", instances)
    assert status == 200 and body["model_version"] == version, body
    expected = call(server, "POST", f"{base}:predict", instances)[1]["predictions"]
    assert np.allclose(body["predictions"], expected, atol=1e-6)
    for method, path, data in (
        ("GET", f"{base}/versions/000000000000", None),
        ("POST", f"{base}/versions/000000000000:predict", instances),
        ("GET", f"/v1/models/nope/versions/{version}", None),
        ("POST", f"/v1/models/nope/versions/{version}:predict", instances),
        ("GET", f"{base}/versions/..%2F..%2Fetc%2Fpasswd", None),
    ):
        status, answer = call(server, method, path, data)
        assert status == 404 and answer["error"], (path, answer)  # unknown model, or no route
        assert answer["model_version"] == version


def test_onnx_backend_serves_the_tf_predictions(server: Server, tmp_path: Path) -> None:
    images = image_input(png(0), png(1, size=13), png(2, mode="RGB"))
    path = f"/v2/models/{server.name}/infer"
    tf = call(server, "POST", path, images)[1]
    assert call(server, "GET", f"/v2/models/{server.name}")[1]["platform"] == "tensorflow_keras"
    flags = ("--bundle", server.bundle, "--drain-seconds", "0", "--backend", "onnx")
    with running(tmp_path, *flags) as onnx_server:
        meta = call(onnx_server, "GET", f"/v2/models/{server.name}")[1]
        assert meta["platform"] == "onnxruntime_onnx"
        assert "backend onnx" in onnx_server.log.read_text()
        onnx = call(onnx_server, "POST", path, images)[1]
    assert onnx["model_version"] == tf["model_version"]
    shape = tf["outputs"][0]["shape"]
    assert_same_model(
        np.reshape(tf["outputs"][0]["data"], shape), np.reshape(onnx["outputs"][0]["data"], shape)
    )
