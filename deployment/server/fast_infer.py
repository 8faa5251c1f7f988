"""v2 infer's hot path as a raw ASGI app in front of FastAPI, with requests batched per loop turn.

What it answers itself: POST /v2/models/{name}[/versions/{v}]/infer with a declared
Content-Length of at most INLINE_BYTES (and under --max-body-bytes), no binary tensor
extension, a tensor input ("pixels"), on an ONNX bundle with no --batch-max-size batcher,
while the server is not draining. Everything else (encoded images, the binary extension,
TensorFlow, chunked bodies, draining, every other route) goes on to the FastAPI app
unchanged, with the body replayed when it was already read. The answers are the same
bytes: oip.parse, state.screen (the OOD score, ood.py), oip.response and the same JSON errors.

Why: the same request through FastAPI, Starlette's routing and the two middlewares costs
about 0.12 ms of server CPU, three times the bare HTTP stack (bench/README.md, serve), and
the model call for an 8x8 digit is smaller than that.

Batching without waiting: a request's images join a list, and the first to arrive in a turn
of the event loop schedules one flush with loop.call_soon. The flush runs after every
request that arrived in the same turn (uvicorn reads each ready socket, then runs their
tasks) has joined, stacks images of one shape into one predictor.predict, and hands each
request its rows. No request waits for a timer, so a lone client sees no added latency, and
under load the batches grow with the concurrency. The flush runs on the event loop: only
small tensor requests come here (at most INLINE_BYTES of JSON each).

Metrics, pinning and draining are kept as the middlewares keep them: serve_requests_total
and serve_request_seconds with the route's template, the request pinned to the bundle
current on arrival (a hot reload never changes the model under it), and state.in_flight
counted for the drain.
"""

import asyncio
import re
import sys
import time
import traceback

import numpy as np

from deployment.server import oip
from deployment.server.inference import ApiError, dumps

INLINE_BYTES = 64 << 10  # the JSON bodies answered here at most (flushed on the event loop)
INFER = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
ROUTES = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
JSON_HEADERS = [(b"content-type", b"application/json")]


class FastInfer:
    """ASGI app: small tensor v2 infer on ONNX answered here, the rest passed to `app`."""

    def __init__(self, app, state) -> None:
        self.app, self.state = app, state
        self._pending: list[tuple[object, list[np.ndarray], asyncio.Future]] = []
        self._scheduled = False
        self._limit = min(INLINE_BYTES, state.config.max_body_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = INFER.fullmatch(scope["path"])
        state = self.state
        bundle = state.bundle
        if (
            match is None
            or bundle is None
            or state.draining
            or state.batcher is not None
            or bundle.backend != "onnx"
        ):
            return await self.app(scope, receive, send)
        length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"inference-header-content-length":
                return await self.app(scope, receive, send)
        if length is None or not length.isdigit() or int(length) > self._limit:
            return await self.app(scope, receive, send)
        body = await _read(receive)
        if body is None:  # the client went away: no one to answer
            return
        await self._answer(scope, receive, send, match, bundle, body)

    async def _answer(self, scope, receive, send, match, bundle, body: bytes) -> None:
        state, start, status = self.state, time.perf_counter(), 500
        route = ROUTES[match["version"] is not None]
        state.in_flight += 1
        try:
            name, version = match["name"], match["version"]
            if name != bundle.name or version not in (None, bundle.version):
                wanted = name if version is None else f"{name} version {version}"
                raise ApiError(404, f"unknown model {wanted!r}")
            parsed = oip.parse(body, None, len(bundle.labels))
            if parsed.binary or not _tensor_request(parsed.request):
                # encoded images decode in a thread; binary outputs take the full route
                state.in_flight -= 1
                status = None  # counted by Guard on the FastAPI path
                return await self.app(scope, _replay(body, receive), send)
            images = parsed.images(bundle, state.limits)
            probs = await self._predict(bundle.predictor, images)
            ood = state.screen(bundle, images, probs, parsed.headers)  # 422 over the threshold
            state.metrics.observe_predictions(probs, bundle)
            answer, _ = oip.response(parsed, probs, bundle, ood)
            status = 200
            await _send(send, 200, dumps(answer))
        except ApiError as err:
            status = err.status
            await _error(send, status, err.message, bundle)
        except MemoryError:  # the server's state, not the client's request: retryable
            status = 503
            await _error(send, 503, "the server is out of memory; retry later", bundle)
        except Exception as err:
            traceback.print_exception(err, file=sys.stderr)
            await _error(send, 500, f"internal error: {type(err).__name__}", bundle)
        finally:
            if status is not None:
                state.in_flight -= 1
                seconds = time.perf_counter() - start
                state.metrics.count_request(route, "POST", status, seconds)

    def _predict(self, predictor, images: list[np.ndarray]) -> asyncio.Future:
        """A future of float32 [N, K] for `images`, run at the next flush with the images of
        every request that arrived in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((predictor, images, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        groups: dict[tuple, list[tuple[int, list[np.ndarray], asyncio.Future]]] = {}
        for predictor, images, future in pending:
            if len({image.shape for image in images}) != 1:  # mixed sizes: a call of its own
                groups[(id(predictor), id(future))] = [(predictor, images, future)]
            else:
                groups.setdefault((id(predictor), images[0].shape), []).append(
                    (predictor, images, future)
                )
        for members in groups.values():
            predictor = members[0][0]
            try:
                if len(members) == 1 and len(members[0][1]) != 1:
                    probs = predictor.predict_images(members[0][1])
                else:
                    probs = predictor.predict(np.stack([i for m in members for i in m[1]]))
            except Exception as err:  # each request answers it
                for _, _, future in members:
                    if not future.done():
                        future.set_exception(err)
                continue
            offset = 0
            for _, images, future in members:
                rows = probs[offset : offset + len(images)]
                offset += len(images)
                if not future.done():  # a request cancelled (client gone) takes nothing
                    future.set_result(rows)
        self.state.metrics.batch_size.observe(sum(len(images) for _, images, _ in pending))


def _tensor_request(request: dict) -> bool:
    inputs = request.get("inputs")
    return isinstance(inputs, list) and all(
        isinstance(i, dict) and i.get("datatype") != "BYTES" for i in inputs
    )


async def _read(receive) -> bytes | None:
    """The whole body (the HTTP stack holds it to its declared length), or None when the
    client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive that gives `body` once, then the connection's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _error(send, status: int, message: str, bundle) -> None:
    await _send(send, status, dumps({"error": message, "model_version": bundle.version}))


async def _send(send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
