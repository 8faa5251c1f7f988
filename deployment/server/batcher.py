"""Every model call of the server, batched with no timer and run off the event loop.

A request awaits `Batcher.predict(predictor, images)`. The requests that arrive in one turn
of the event loop are handed to the model threads together (loop.call_soon: the hand-over
runs after every request read in that turn has joined). A model thread takes the oldest
waiting request and every other waiting one of the same predictor and image shape, up to
--max-images and --max-input-mib in all, stacks them into one `predictor.predict` and hands
each request its rows. While a call runs, new requests queue, so under load the batches
grow with the concurrency; a lone request waits for nothing.

Why threads: the model call (onnxruntime, TensorFlow) releases the GIL, so the event loop
keeps answering (health, metrics, other requests) while it runs; and the number of model
threads bounds how many calls hold memory at once: at most `threads` calls of at most one
request's budget each (budget.py). A request whose images differ in size runs as a call of
its own (predictor.predict_images), as does a hot reload's new predictor.

Errors reach each request of the failed call: an allocation failure (MemoryError,
onnxruntime's "Failed to allocate", TensorFlow's ResourceExhaustedError) as 503 with
Retry-After (errors.out_of_memory); anything else as itself (a 500 at the door).
"""

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np

from deployment.server.errors import ApiError, out_of_memory

OUT_OF_MEMORY_WORDS = ("alloc", "out of memory", "resourceexhausted", "resource_exhausted")


@dataclass(eq=False)
class _Job:
    predictor: object  # the pinned bundle's serving.Predictor
    images: list[np.ndarray]  # uint8 [H, W, C]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    shape: tuple | None = field(init=False)  # the one image shape, None when mixed
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        shapes = {image.shape for image in self.images}
        self.shape = shapes.pop() if len(shapes) == 1 else None
        self.nbytes = sum(image.nbytes for image in self.images)

    def joins(self, first: "_Job") -> bool:
        return (
            self.shape is not None
            and self.shape == first.shape
            and self.predictor is first.predictor
        )


class Batcher:
    """Model threads that run the waiting requests' images as few calls as the budget
    allows; `observe(n)` is told each call's image count."""

    def __init__(self, max_images: int, max_input_bytes: int, threads: int, observe=None):
        self.max_images, self.max_input_bytes = max_images, max_input_bytes
        self.observe = observe
        self._turn: list[_Job] = []  # this loop turn's requests (touched on the loop only)
        self._scheduled = False
        self._waiting: list[_Job] = []  # handed over, not yet taken (guarded by _cond)
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"model-{n}", daemon=True)
            for n in range(max(1, threads))
        ]
        for thread in self._threads:
            thread.start()

    async def predict(self, predictor, images: list[np.ndarray]) -> np.ndarray:
        """float32 [N, K] for uint8 [H, W, C] images, from a model thread."""
        if self._closed:
            raise ApiError(503, "shutting down", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = _Job(predictor, images, loop.create_future(), loop)
        self._turn.append(job)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._hand_over)
        return await job.future

    def close(self) -> None:
        """Run what is waiting, then stop the model threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _hand_over(self) -> None:
        jobs, self._turn, self._scheduled = self._turn, [], False
        with self._cond:
            self._waiting.extend(jobs)
            self._cond.notify(len(jobs))

    def _take(self) -> list[_Job] | None:
        """The oldest waiting request and those that batch with it, within the budget."""
        with self._cond:
            while not self._waiting:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._waiting[0]
            if first.shape is None:
                return [self._waiting.pop(0)]
            batch, kept, images, nbytes = [], [], 0, 0
            for job in self._waiting:
                fits = images + len(job.images) <= self.max_images and (
                    nbytes + job.nbytes * 4 <= self.max_input_bytes
                )
                if job is first or (fits and job.joins(first)):
                    batch.append(job)
                    images, nbytes = images + len(job.images), nbytes + job.nbytes * 4
                else:
                    kept.append(job)
            self._waiting = kept
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            predictor = batch[0].predictor
            try:
                if len(batch) == 1:
                    result = predictor.predict_images(batch[0].images)
                else:
                    result = predictor.predict(np.stack([i for job in batch for i in job.images]))
            except BaseException as err:  # noqa: B036 - every request must be answered
                result = _classify(err)
            if self.observe is not None and not isinstance(result, BaseException):
                self.observe(sum(len(job.images) for job in batch))  # before any answer
            for loop in {job.loop for job in batch}:
                mine = [job for job in batch if job.loop is loop]
                try:
                    loop.call_soon_threadsafe(_deliver, mine, result)
                except RuntimeError:  # the loop closed: no one is waiting
                    pass
            del batch, result  # let the images go now, not when the next call comes


def _deliver(batch: list[_Job], result) -> None:
    """On the loop: each request its rows, or the call's error."""
    offset = 0
    for job in batch:
        if job.future.done():  # cancelled: the client went away
            offset += len(job.images)
            continue
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result[offset : offset + len(job.images)])
        offset += len(job.images)


def _classify(err: BaseException) -> BaseException:
    """An allocation failure as 503 (errors.out_of_memory); other errors as they are."""
    if isinstance(err, MemoryError):
        return out_of_memory()
    text = f"{type(err).__name__} {err}".lower()
    if any(word in text for word in OUT_OF_MEMORY_WORDS):
        return out_of_memory()
    return err
