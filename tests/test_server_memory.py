"""Server memory stays bounded whatever clients send: a real server on 127.0.0.1, crafted
requests of all-black 6000x6000 PNGs (35 KB each, 36 million pixels), sequentially and from
8 clients at once (bench/server_memory.py has the cases and the bound), and a server that
runs out of memory answering 503, not 400, and serving on.
"""

import io
import json
import resource
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import stop_process
from PIL import Image
from servers import shared_bundle, start

from bench.server_memory import CASES, black_png, bound, post, run_cases, v2_body

MAX_PIXELS, SLOTS = 40_000_000, 2  # the server's default budget; 2 decodes at once


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_bundle(tmp_path_factory)


@contextmanager
def serving(bundle: Path, root: Path):
    """A real server on 127.0.0.1 with the default budget and 2 decode slots, warmed up;
    yields (process, infer URL)."""
    flags = ["--bundle", bundle, "--max-pixels", MAX_PIXELS, "--decode-slots", SLOTS]
    srv = start(root, *map(str, flags), "--backend", "onnx", feedback=root / "feedback")
    proc, url = srv.proc, srv.url
    try:
        infer = f"{url}/v2/models/tiny-mlp-quick/infer"
        assert post(infer, v2_body(black_png(64), 1))[0] == 200  # warm-up
        yield proc, infer
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    with serving(bundle, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.mark.parametrize("clients", [1, 8])
def test_crafted_requests_get_413_and_memory_stays_bounded(server, clients: int) -> None:
    proc, infer = server
    result = run_cases(infer, proc.pid, clients, repeat=2)
    expected = {case: (200 if n * 36_000_000 <= MAX_PIXELS else 413) for case, n in CASES.items()}
    for case, status in expected.items():
        assert result["statuses"][case] == {status: 2 * clients}, (case, result)
    assert "budget of 40,000,000 pixels a request" in result["errors"]["over (120)"]
    limit = bound(MAX_PIXELS, SLOTS, result["in_flight_bytes"])
    assert result["growth_mib"] * 2**20 <= limit, result
    assert proc.poll() is None


def test_out_of_memory_is_503_and_the_server_serves_on(bundle: Path, tmp_path: Path) -> None:
    """Cap a fresh server's address space at 24 MiB over what it has mapped: decoding a
    6000x6000 RGB image (108 MB, more than a malloc arena can grow to without a new mapping)
    then fails with MemoryError, which is the server's state (503), not the client's
    request; small requests still succeed."""
    with serving(bundle, tmp_path) as (proc, infer):
        process = psutil.Process(proc.pid)
        old = process.rlimit(resource.RLIMIT_AS)
        process.rlimit(resource.RLIMIT_AS, (process.memory_info().vms + (24 << 20), old[1]))
        try:
            status, answer = post(infer, v2_body(black_png(mode="RGB"), 1))
            small = post(infer, v2_body(black_png(64), 1))[0]
        finally:
            process.rlimit(resource.RLIMIT_AS, old)
        served = post(infer, v2_body(black_png(mode="RGB"), 1))[0]  # the cap lifted: served again
    assert (status, answer.get("error")) == (503, "the server is out of memory; retry later")
    assert (small, served) == (200, 200)


def test_images_are_limited_per_request_not_per_image(server) -> None:
    """Two images each under the budget, together over it: 413 before any decode."""
    _, infer = server
    png = black_png(4500)  # 20.25 Mpx: one fits the 40 Mpx budget, two do not
    assert post(infer, v2_body(png, 1))[0] == 200
    status, answer = post(infer, v2_body(png, 2))
    assert status == 413 and "40,500,000 pixels (4500x4500, 4500x4500)" in answer["error"]


def test_a_large_jpeg_is_served_as_the_bundle_prepares_it(
    server, bundle: Path, tmp_path: Path
) -> None:
    """The server hands the bundle's prepare the undecoded file, so a JPEG is draft-decoded
    exactly as the shard writer and `load_bundle(...).prepare` decode it; a full-size load
    first gives other pixels. (load_bundle runs in a child: it imports the bundle's code.)"""
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(out, "JPEG")
    (tmp_path / "photo.jpg").write_bytes(out.getvalue())
    script = """if True:
        import io, json, sys
        import numpy as np
        from PIL import Image
        from deployment.server.bundle import load_bundle
        b = load_bundle(sys.argv[1], backend="onnx")
        data = open(sys.argv[2], "rb").read()
        full = Image.open(io.BytesIO(data))
        full.load()  # what the server did before: the full-size decode, then prepare
        same = bool(np.array_equal(b.predictor.prepare(full), b.predictor.prepare(data)))
        print(json.dumps([b.predictor.predict(b.predictor.prepare(data)[None])[0].tolist(), same]))
    """
    child = subprocess.run(
        [sys.executable, "-c", script, str(bundle), str(tmp_path / "photo.jpg")],
        capture_output=True,
        text=True,
        check=True,
    )
    expected, full_size_is_same = json.loads(child.stdout.strip().splitlines()[-1])
    _, infer = server
    status, answer = post(infer, v2_body(out.getvalue(), 1))
    assert status == 200
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, atol=1e-6)
    assert not full_size_is_same


def test_a_model_call_out_of_memory_is_503_with_retry_after_and_frees_it(
    bundle: Path, tmp_path: Path
) -> None:
    """A budget opened wide, then the address space capped just over what the server holds:
    the model call's allocation fails inside onnxruntime. The answer is 503 with Retry-After
    (the server's state, not the client's request), the memory goes back, and once the cap is
    lifted the same request is served."""
    wide = ("--max-images", "100000", "--max-input-mib", "100000", "--max-pixels", "10000000000")
    wide += ("--max-body-bytes", str(64 << 20))
    srv = start(tmp_path, "--bundle", bundle, "--backend", "onnx", *wide, feedback=tmp_path / "f")
    count, side = 3000, 64  # 12 MB sent, 48 MB of float32 in the graph's first op
    head = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "UINT8",
                "shape": [count, side, side, 1],
                "parameters": {"binary_data_size": count * side * side},
            }
        ]
    }
    text = json.dumps(head).encode()
    body = text + np.zeros(count * side * side, np.uint8).tobytes()
    headers = {"Inference-Header-Content-Length": str(len(text))}
    infer = f"{srv.url}/v2/models/tiny-mlp-quick/infer"

    def send() -> tuple[int, object, dict]:
        request = urllib.request.Request(infer, body, headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, {}
        except urllib.error.HTTPError as err:
            return err.code, err.headers, json.loads(err.read())

    try:
        for _ in range(3):  # warm: what a call of this size keeps (malloc, uvicorn) is kept
            assert send()[0] == 200
        process = psutil.Process(srv.proc.pid)
        before = process.memory_info().rss
        old = process.rlimit(resource.RLIMIT_AS)
        process.rlimit(resource.RLIMIT_AS, (process.memory_info().vms + (12 << 20), old[1]))
        try:
            status, answer_headers, answer = send()
            after = process.memory_info().rss
        finally:
            process.rlimit(resource.RLIMIT_AS, old)
        served = send()[0]
    finally:
        stop_process(srv.proc)
    assert (status, answer.get("error")) == (503, "the server is out of memory; retry later")
    assert answer_headers.get("Retry-After") == "1"
    assert after - before < 16 << 20, (before, after)
    assert served == 200
    assert "Traceback" not in srv.logged()
