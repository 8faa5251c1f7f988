"""Micro-batching: the Batcher with a fake model (what batches with what), and a real server
with --batch-max-size whose concurrent one-image requests answer as unbatched ones do."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from deployment.server.batching import Batcher
from models.common.serving import Predictor


class FakePredictor(Predictor):
    """predict: row i = [sum of image i, its height]; records each batch's size and shapes."""

    def __init__(self) -> None:
        super().__init__(["sum", "height"], 1, None)
        self.batches: list[tuple[int, tuple]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append((len(batch), batch.shape[1:]))
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        return np.stack([sums, np.full(len(batch), batch.shape[1])], axis=1).astype(np.float32)


def _run_together(fn, args: list) -> list:
    """Call fn(*a) for every a in args from as many threads, released at once."""
    barrier = threading.Barrier(len(args))

    def call(a):
        barrier.wait()
        return fn(*a)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(call, args))


def test_concurrent_images_batch_by_bundle_and_shape() -> None:
    sizes: list[int] = []
    batcher = Batcher(max_size=4, timeout_s=0.2, observe=sizes.append)
    old, new = FakePredictor(), FakePredictor()
    args = []  # 6 images per bundle, of two sizes: (8, 8, 1) and (9, 9, 1)
    for i in range(12):
        size = 9 if i % 3 == 0 else 8
        args.append((old if i % 2 else new, [np.full((size, size, 1), i, np.uint8)]))
    try:
        results = _run_together(batcher.predict, args)
    finally:
        batcher.close()
    for (_, [image]), probs in zip(args, results, strict=True):
        assert probs.shape == (1, 2)
        assert probs[0, 0] == image.sum() and probs[0, 1] == image.shape[0]  # its own row
    for bundle in (old, new):  # never two bundles or two shapes in one call
        assert sum(n for n, _ in bundle.batches) == 6
        assert all(n <= 4 for n, _ in bundle.batches)
    assert sorted(sizes) == sorted(n for b in (old, new) for n, _ in b.batches)
    assert max(sizes) > 1


def test_several_images_skip_the_queue_and_errors_reach_the_caller() -> None:
    batcher, bundle = Batcher(max_size=8, timeout_s=0.001), FakePredictor()
    try:
        images = [np.zeros((8, 8, 1), np.uint8), np.ones((5, 5, 1), np.uint8)]
        assert batcher.predict(bundle, images).shape == (2, 2)  # predict_images, at once
        broken = FakePredictor()
        broken.predict = lambda batch: 1 / 0
        with pytest.raises(ZeroDivisionError):
            batcher.predict(broken, images[:1])
        assert batcher.predict(bundle, images[:1])[0, 0] == 0  # the worker survived
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(bundle, images[0])


@pytest.mark.slow
def test_batched_server_answers_as_unbatched(tmp_path_factory: pytest.TempPathFactory) -> None:
    from servers import b64, call, image_input, multipart, png, running, shared_bundle

    bundle = shared_bundle(tmp_path_factory)
    root: Path = tmp_path_factory.mktemp("batching")
    images = [png(i % 3, size=8 + i % 2) for i in range(16)]  # two sizes: two queues
    flags = ("--batch-max-size", "8", "--batch-timeout-ms", "50")
    with running(root, "--bundle", bundle, "--drain-seconds", "0", *flags) as server:
        infer = f"/v2/models/{server.name}/infer"
        status, body = call(server, "POST", infer, image_input(*images))  # one request: unbatched
        assert status == 200, body
        expected = np.array(body["outputs"][0]["data"]).reshape(len(images), -1)

        def v2(image: bytes) -> list[float]:
            status, body = call(server, "POST", infer, image_input(image))
            assert status == 200, body
            return body["outputs"][0]["data"]

        def v1(image: bytes) -> list[float]:
            instances = {"instances": [{"b64": b64(image)}]}
            status, body = call(server, "POST", f"/v1/models/{server.name}:predict", instances)
            assert status == 200, body
            return body["predictions"][0]

        def page(image: bytes) -> list[float]:
            status, body = call(server, "POST", "/predict", *multipart(image))
            assert status == 200, body
            return sorted((t["index"], t["score"]) for t in body["top_k"])

        for route in (v2, v1):
            got = _run_together(route, [(i,) for i in images])
            assert np.allclose(got, expected, atol=1e-5), route.__name__
        got = _run_together(page, [(i,) for i in images])
        assert np.allclose([[s for _, s in row] for row in got], expected, atol=1e-5)
        text = call(server, "GET", "/metrics")[1].decode()
    metric = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("serve_batch_size")
    }
    assert metric["serve_batch_size_sum"] == 3 * len(images)  # every single image, batched
    assert metric['serve_batch_size_bucket{le="1.0"}'] < metric["serve_batch_size_count"]
