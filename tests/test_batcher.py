"""The one door and the one batcher (deployment/server/door.py, batcher.py): requests that
wait together share a model call within the budget, each gets its own rows, the call runs
off the event loop, its errors reach every request it served (an allocation failure as
503); the door answers v2 infer with the same JSON errors as every route; then a real server
answers concurrent requests on every route as it answers one request of them all."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from deployment.server.batcher import Batcher
from deployment.server.door import Door
from deployment.server.errors import ApiError
from deployment.server.lifecycle import State
from deployment.server.options import Config
from deployment.server.served import Served
from models.common.serving import Predictor


class SumPredictor(Predictor):
    """predict: row i = [sum of image i, its height]; records each call's batch shape and
    the thread it ran on."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(["sum", "height"], 1, None)
        self.calls: list[tuple] = []
        self.threads: set[str] = set()
        self.delay = delay

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)  # a model call releases the GIL as this does
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        return np.stack([sums, np.full(len(batch), batch.shape[1])], axis=1).astype(np.float32)


def _together(batcher: Batcher, jobs: list) -> list:
    """Every (predictor, images) of `jobs` submitted in one turn of a fresh event loop."""

    async def run():
        return await asyncio.gather(
            *(batcher.predict(p, images) for p, images in jobs), return_exceptions=True
        )

    return asyncio.run(run())


def test_waiting_requests_share_a_call_by_predictor_and_shape() -> None:
    sizes: list[int] = []
    batcher = Batcher(max_images=4, max_input_bytes=1 << 30, threads=1, observe=sizes.append)
    old, new = SumPredictor(), SumPredictor()
    jobs = []  # 6 one-image requests per predictor, of two sizes: (8, 8, 1) and (9, 9, 1)
    for i in range(12):
        size = 9 if i % 3 == 0 else 8
        jobs.append((old if i % 2 else new, [np.full((size, size, 1), i, np.uint8)]))
    try:
        results = _together(batcher, jobs)
    finally:
        batcher.close()
    for (_, [image]), probs in zip(jobs, results, strict=True):
        assert probs.shape == (1, 2)
        assert probs[0, 0] == image.sum() and probs[0, 1] == image.shape[0]  # its own rows
    for predictor in (old, new):  # never two predictors or two shapes in one call
        assert sum(shape[0] for shape in predictor.calls) == 6
        assert all(shape[0] <= 4 for shape in predictor.calls)  # --max-images
    assert max(sizes) > 1 and sum(sizes) == 12
    assert {t for p in (old, new) for t in p.threads} == {"model-0"}  # never the loop's


def test_the_call_runs_off_the_event_loop() -> None:
    """While a 0.3 s model call runs, the loop keeps turning (health, other requests)."""
    batcher = Batcher(max_images=8, max_input_bytes=1 << 30, threads=1)
    predictor = SumPredictor(delay=0.3)
    ticks = []

    async def run():
        async def tick():
            while len(ticks) < 20:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        start = time.perf_counter()
        await batcher.predict(predictor, [np.zeros((4, 4, 1), np.uint8)])
        await ticker
        return start, time.perf_counter()

    try:
        start, end = asyncio.run(run())
    finally:
        batcher.close()
    during = [t for t in ticks if start < t < start + 0.3]
    assert len(during) >= 10 and max(np.diff(ticks)) < 0.05, np.diff(ticks)


def test_a_failing_call_answers_each_request_and_memory_is_503() -> None:
    batcher = Batcher(max_images=8, max_input_bytes=1 << 30, threads=2)
    image = [np.zeros((4, 4, 1), np.uint8)]
    failures = {
        "bug": ZeroDivisionError("division by zero"),
        "memory": MemoryError(),
        "onnxruntime": RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory"),
    }
    try:
        for kind, error in failures.items():
            predictor = SumPredictor()

            def fail(batch, error=error):
                raise error

            predictor.predict = fail
            results = _together(batcher, [(predictor, image)] * 3)
            for result in results:
                if kind == "bug":
                    assert result is error
                else:
                    assert isinstance(result, ApiError) and result.status == 503
                    assert result.headers == {"Retry-After": "1"}
        assert _together(batcher, [(SumPredictor(), image)])[0].shape == (1, 2)  # serving on
    finally:
        batcher.close()


def _state(predictor: Predictor, **config) -> State:
    """The server's State with a bundle of `predictor` (no input_stats.json: no OOD score)."""
    bundle = SimpleNamespace(
        name="m", version="v1", labels=predictor.labels, backend="onnx", channels=1
    )
    bundle.predictor, bundle.input_stats, bundle.served_as = predictor, None, "m"
    bundle.input_size = bundle.model_size = (8, 8)
    state = State(Config(bundle=None, **config))
    state.models.served = Served({"m": bundle}, {"m": "m"})
    return state


def _pixels(value: int, size: int, count: int = 1) -> bytes:
    data = [value] * size * size * count
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [count, size, size, 1]}
    return orjson.dumps({"inputs": [{**tensor, "data": data}]})


async def _call(door, path: str, body: bytes, method: str = "POST", headers=None):
    """(status, headers, JSON) of one request through the door, the body in one message."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers or [(b"content-length", str(len(body)).encode())],
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await door(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(sent[1]["body"])


async def _framework(scope, receive, send):  # the FastAPI app behind the door
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_the_door_answers_infer_and_owns_errors_draining_and_metrics() -> None:
    predictor = SumPredictor()
    state = _state(predictor, max_images=4)
    door = Door(_framework, state)
    bodies = [_pixels(v, 8) for v in range(5)] + [_pixels(v, 9) for v in (7, 8)]

    async def together():
        return await asyncio.gather(*(_call(door, "/v2/models/m/infer", b) for b in bodies))

    try:
        answers = asyncio.run(together())
        for (status, _, body), value, size in zip(
            answers, [*range(5), 7, 8], [8] * 5 + [9] * 2, strict=True
        ):
            assert status == 200, body
            assert body["outputs"][0]["data"] == [value * size * size, size]
        assert sorted(predictor.calls) == [(1, 8, 8, 1), (2, 9, 9, 1), (4, 8, 8, 1)]

        def one(path, body=b"{}", method="POST", headers=None):
            return asyncio.run(_call(door, path, body, method, headers))

        assert one("/predict")[0] == 299  # not infer: the app's
        status, _, body = one("/v2/models/other/infer", bodies[0])
        assert (status, body["model_version"]) == (404, "v1")
        assert body["error"] == "unknown model 'other'; serving ['m']"
        status, _, body = one("/v2/models/m/infer", b"{not json")
        assert status == 400 and body["error"].startswith("malformed JSON")
        status, headers, _ = one("/v2/models/m/infer", method="GET")
        assert (status, headers[b"allow"]) == (405, b"POST")
        status, _, body = one("/v2/models/m/infer", _pixels(0, 8, count=5))
        assert status == 413 and "5 images" in body["error"] and "--max-images" in body["error"]
        huge = [(b"content-length", str(17 << 20).encode())]
        status, headers, body = one("/v2/models/m/infer", headers=huge)
        assert (status, headers[b"connection"]) == (413, b"close")
        assert "--max-body-bytes" in body["error"]
        state.draining = True
        status, headers, body = one("/v2/models/m/infer", bodies[0])
        assert (status, body["error"], headers[b"retry-after"]) == (503, "shutting down", b"1")
        assert one("/v2/health/live")[0] == 299  # health is answered while draining
        text = state.metrics.exposition().decode()
        route = 'route="/v2/models/{name}/infer"'
        assert f'serve_requests_total{{method="POST",{route},status="200"}} 7.0' in text
        assert f'serve_requests_total{{method="POST",{route},status="413"}} 2.0' in text
        assert "serve_batch_size_sum 7.0" in text
        assert state.in_flight == 0
    finally:
        state.stop()


@pytest.mark.slow
def test_concurrent_requests_answer_as_one_request_of_them_all(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from servers import b64, call, image_input, multipart, png, running, shared_bundle

    bundle = shared_bundle(tmp_path_factory)
    root: Path = tmp_path_factory.mktemp("batcher")
    rng = np.random.default_rng(0)
    tensors = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    images = [png(i % 3, size=8 + i % 2) for i in range(16)]  # two sizes: two calls

    def pixels(batch: np.ndarray) -> dict:
        tensor = {"name": "pixels", "datatype": "UINT8", "shape": list(batch.shape)}
        return {"inputs": [{**tensor, "data": batch.ravel().tolist()}]}

    def together(fn, items) -> list:
        barrier = threading.Barrier(len(items))

        def one(item):
            barrier.wait()
            return fn(item)

        with ThreadPoolExecutor(len(items)) as pool:
            return list(pool.map(one, items))

    flags = ("--bundle", bundle, "--drain-seconds", "0", "--backend", "onnx")
    with running(root, *flags, "--model-threads", "1") as srv:
        infer = f"/v2/models/{srv.name}/infer"

        def rows(status_body) -> np.ndarray:
            status, body = status_body
            assert status == 200, body
            return np.array(body["outputs"][0]["data"]).reshape(-1, 3)

        expected = rows(call(srv, "POST", infer, pixels(tensors)))
        got = together(
            lambda i: rows(call(srv, "POST", infer, pixels(tensors[i : i + 1]))), range(16)
        )
        np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-6)

        expected = rows(call(srv, "POST", infer, image_input(*images)))
        got = together(lambda image: rows(call(srv, "POST", infer, image_input(image))), images)
        np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-6)

        def v1(image: bytes) -> list[float]:
            instances = {"instances": [{"b64": b64(image)}]}
            status, body = call(srv, "POST", f"/v1/models/{srv.name}:predict", instances)
            assert status == 200, body
            return body["predictions"][0]

        def page(image: bytes) -> list[float]:
            status, body = call(srv, "POST", "/predict", *multipart(image))
            assert status == 200, body
            return [t["score"] for t in sorted(body["top_k"], key=lambda t: t["index"])]

        np.testing.assert_allclose(together(v1, images), expected, atol=1e-6)
        np.testing.assert_allclose(together(page, images), expected, atol=1e-6)
        text = call(srv, "GET", "/metrics")[1].decode()
    calls = float(text.split("serve_batch_size_count ")[1].split()[0])
    images_run = float(text.split("serve_batch_size_sum ")[1].split()[0])
    assert images_run == 16 * 6 and calls < 16 * 4, text  # concurrent requests shared calls
