"""Optional micro-batching: concurrent one-image requests run as one model call.

Off by default (serve --batch-max-size 1). With --batch-max-size N > 1, a request that
sends one image queues it and waits; a worker thread takes the oldest queued image and
gathers others for the same predictor and of the same H x W x C shape until it has N or the oldest
has waited --batch-timeout-ms, then runs them as one `predictor.predict` and routes each row
back to its request's future. Images of another shape or predictor wait for a batch of their
own, so a hot reload never mixes two models in one call. A request of several images is
already a batch and runs at once (predictor.predict_images). A waiting request holds one of
the server's worker threads (anyio's default: 40), which bounds a useful N.

It pays off where one model call costs much more than its per-image share (TensorFlow's
per-call overhead, many concurrent clients); with a fast backend and few clients it only
adds up to the timeout to each request. serve_batch_size (telemetry.py) shows the sizes.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class _Item:
    predictor: object  # the bundle's serving.Predictor
    image: np.ndarray  # uint8 [H, W, C]
    future: Future
    arrived: float = field(default_factory=time.monotonic)

    def batches_with(self, other: "_Item") -> bool:
        return self.predictor is other.predictor and self.image.shape == other.image.shape


class Batcher:
    """Gather single images into batches of up to `max_size`, waiting at most `timeout_s`
    after the oldest arrived; `observe(size)` is called once per batch run."""

    def __init__(
        self, max_size: int, timeout_s: float, observe: Callable[[int], None] | None = None
    ) -> None:
        if max_size < 2:
            raise ValueError(
                f"a batch of {max_size} is no batching; call predictor.predict_images"
            )
        self.max_size, self.timeout_s, self.observe = max_size, max(timeout_s, 0.0), observe
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def predict(self, predictor, images: list[np.ndarray]) -> np.ndarray:
        """float32 [N, K], as predictor.predict_images; blocks until the batch has run."""
        if len(images) != 1:
            return predictor.predict_images(images)
        return self.submit(predictor, images[0]).result()[None]

    def submit(self, predictor, image: np.ndarray) -> Future:
        """Queue one uint8 [H, W, C] image; the future's result is its float32 [K] row."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed (the server is shutting down)")
            self._items.append(_Item(predictor, image, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Run what is queued, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._items[0]
            deadline = first.arrived + self.timeout_s
            while True:
                batch = [it for it in self._items if it.batches_with(first)][: self.max_size]
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            taken = set(map(id, batch))
            self._items = deque(it for it in self._items if id(it) not in taken)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                probs = batch[0].predictor.predict(np.stack([it.image for it in batch]))
            except Exception as err:  # each request answers it (500, or the bundle's error)
                for it in batch:
                    it.future.set_exception(err)
            else:
                for it, row in zip(batch, probs, strict=True):
                    it.future.set_result(row)
            if self.observe is not None:
                self.observe(len(batch))
