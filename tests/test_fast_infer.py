"""The raw ASGI v2 infer path (deployment/server/fast_infer.py): requests that arrive in one
turn of the event loop share one model call, each gets its own rows, and everything it does
not answer reaches the FastAPI app with its body; then a real server answers concurrent
tensor requests as one request of them all, with the same JSON errors."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from deployment.server.fast_infer import FastInfer
from deployment.server.lifecycle import Config, State
from models.common.serving import Predictor


class SumPredictor(Predictor):
    """predict: row i = [sum of image i, its height]; records each call's batch shape."""

    def __init__(self) -> None:
        super().__init__(["sum", "height"], 1, None)
        self.calls: list[tuple] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        return np.stack([sums, np.full(len(batch), batch.shape[1])], axis=1).astype(np.float32)


def _state(predictor: Predictor) -> State:
    """The server's State with a bundle of `predictor` (no input_stats.json: no OOD score)."""
    bundle = SimpleNamespace(
        name="m", version="v1", labels=predictor.labels, backend="onnx", channels=1
    )
    bundle.predictor, bundle.input_stats = predictor, None
    state = State(Config(bundle=None))
    state.bundle = bundle
    return state


def _pixels(value: int, size: int) -> bytes:
    data = [value] * size * size
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [1, size, size, 1], "data": data}
    return orjson.dumps({"inputs": [tensor]})


async def _call(app, path: str, body: bytes, method: str = "POST") -> tuple[int, dict]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def test_one_turn_one_model_call_per_shape_each_its_own_rows() -> None:
    predictor = SumPredictor()
    passed: list[tuple[str, bytes]] = []

    async def framework(scope, receive, send):  # the FastAPI app behind: records what it got
        passed.append((scope["path"], (await receive())["body"]))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    state = _state(predictor)
    app = FastInfer(framework, state)
    bodies = [_pixels(v, 8) for v in range(5)] + [_pixels(v, 9) for v in (7, 8)]

    async def together():
        return await asyncio.gather(*(_call(app, "/v2/models/m/infer", b) for b in bodies))

    answers = asyncio.run(together())
    assert predictor.calls == [(5, 8, 8, 1), (2, 9, 9, 1)]  # one call per shape
    for (status, body), value, size in zip(
        answers, [*range(5), 7, 8], [8] * 5 + [9] * 2, strict=True
    ):
        assert status == 200, body
        assert body["outputs"][0]["data"] == [value * size * size, size]
        assert body["model_version"] == "v1"
    text = state.metrics.exposition().decode()
    assert "serve_batch_size_sum 7.0" in text
    assert (
        'serve_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"} 7.0'
        in text
    )
    assert state.in_flight == 0

    # not ours: encoded images, other routes, a wrong model -> 404 here, not passed on
    image = orjson.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]}
    )
    assert asyncio.run(_call(app, "/v2/models/m/infer", image))[0] == 299
    assert asyncio.run(_call(app, "/predict", b"x"))[0] == 299
    assert passed == [("/v2/models/m/infer", image), ("/predict", b"x")]  # the body replayed
    status, body = asyncio.run(_call(app, "/v2/models/other/infer", bodies[0]))
    assert (status, body) == (404, {"error": "unknown model 'other'", "model_version": "v1"})
    status, body = asyncio.run(_call(app, "/v2/models/m/infer", b"{not json"))
    assert status == 400 and body["error"].startswith("malformed JSON")
    state.draining = True  # the drain's 503 is the middleware's
    assert asyncio.run(_call(app, "/v2/models/m/infer", bodies[0]))[0] == 299


def test_a_failing_model_call_answers_each_request_500() -> None:
    predictor = SumPredictor()
    predictor.predict = lambda batch: 1 / 0
    app = FastInfer(None, _state(predictor))

    async def together():
        return await asyncio.gather(
            *(_call(app, "/v2/models/m/infer", _pixels(1, 8)) for _ in range(3))
        )

    for status, body in asyncio.run(together()):
        assert (status, body["error"]) == (500, "internal error: ZeroDivisionError")


def test_server_answers_concurrent_tensors_as_one_request(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from servers import call, running, shared_bundle

    bundle = shared_bundle(tmp_path_factory)
    root: Path = tmp_path_factory.mktemp("fast_infer")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    with running(root, "--bundle", bundle, "--drain-seconds", "0", "--backend", "onnx") as srv:
        infer = f"/v2/models/{srv.name}/infer"

        def pixels(batch: np.ndarray) -> dict:
            tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(batch.shape)}
            return {"inputs": [{**tensor, "data": batch.ravel().tolist()}]}

        status, body = call(srv, "POST", infer, pixels(images))
        assert status == 200, body
        expected = np.array(body["outputs"][0]["data"]).reshape(len(images), -1)
        barrier = threading.Barrier(len(images))

        def one(i: int) -> list[float]:
            barrier.wait()
            status, body = call(srv, "POST", infer, pixels(images[i : i + 1]))
            assert status == 200, body
            return body["outputs"][0]["data"]

        with ThreadPoolExecutor(len(images)) as pool:
            got = list(pool.map(one, range(len(images))))
        assert np.allclose(got, expected, atol=1e-6)
        assert call(srv, "POST", f"/v2/models/{srv.name}x/infer", pixels(images[:1]))[0] == 404
        status, body = call(srv, "POST", infer, {"inputs": [{"name": "pixels"}]})
        assert status == 400 and "shape" in body["error"], body
        text = call(srv, "GET", "/metrics")[1].decode()
    assert "serve_batch_size_sum 32.0" in text  # every image went through the fast path
    route = 'route="/v2/models/{name}/infer"'
    assert f'serve_requests_total{{method="POST",{route},status="200"}} 17.0' in text
    assert f'serve_requests_total{{method="POST",{route},status="404"}} 1.0' in text
