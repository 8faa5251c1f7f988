"""The server's one entrance: a raw ASGI app in front of everything.

For every HTTP request it owns, in this order:
    draining        after SIGTERM, 503 {"error": "shutting down"} (Retry-After, Connection:
                    close) to all but health and metrics (ALWAYS_ANSWERED)
    size limit      413 on a declared Content-Length over --max-body-bytes, before any of
                    the body is read; a chunked body is counted as it arrives
    pinning         the models current on arrival serve the whole request (a hot reload
                    never switches the model under it), in scope["state"]["served"]
    in flight       state.in_flight, what the drain waits for
    metrics         serve_requests_total and serve_request_seconds, by route template
    errors          one JSON body for every error (errors.py), also for exceptions
Then v2 infer is answered here, for every body size and input kind, in four steps:

    Door (route, read the body) -> oip.parse / Infer.inputs (the budget checked)
        -> predict.predict (decode, batcher, OOD, metrics) -> oip.response

and every other route goes to the FastAPI app (serve.py), whose error handlers use the same
body. Why not a FastAPI route for infer: parameter solving, the middleware stack and the
thread hop cost more server CPU than a small model call (bench/README.md, serve).

Small bodies (at most INLINE_BYTES) are parsed on the event loop, larger ones in a worker
thread: parsing holds the GIL, and a thread lets the loop run between its C calls.
"""

import re
import sys
import time
import traceback

from starlette.concurrency import run_in_threadpool

from deployment.server import oip
from deployment.server.errors import RETRY_AFTER, ApiError, body, dumps, out_of_memory
from deployment.server.predict import predict

INLINE_BYTES = 64 << 10  # bodies parsed on the event loop at most
INFER = re.compile(r"/v2/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?/infer")
ROUTES = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
ALWAYS_ANSWERED = ("/v2/health/live", "/v2/health/ready", "/metrics")  # also while draining
CLIENT_GONE = 499  # nginx's status for a client that closed before the answer
CLOSE = {"Connection": "close"}  # the body is not read (or the server stops): end the connection


class Door:
    """ASGI app: the module doc's duties for every request; v2 infer answered here, the rest
    passed to `app`."""

    def __init__(self, app, state) -> None:
        self.app, self.state = app, state
        self.max_bytes = state.budget.limits.max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        state, start = self.state, time.perf_counter()
        path, method = scope["path"], scope["method"]
        infer = INFER.fullmatch(path)
        route = ROUTES[infer["version"] is not None] if infer else None
        status = [500, False]  # the answer's status, whether it has started

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status[:] = message["status"], True
            await send(message)

        served = state.served  # served.Served: replaced, never changed, by a swap
        scope.setdefault("state", {})["served"] = served
        answered = [served.only]  # the bundle an error names (the model asked for, once known)
        state.in_flight += 1
        try:
            if state.draining and path not in ALWAYS_ANSWERED:
                raise ApiError(503, "shutting down", {"Retry-After": RETRY_AFTER, **CLOSE})
            self._check_length(scope)
            if infer is not None:
                await self._infer(scope, receive, send_counted, infer, served, answered)
            else:
                await self.app(scope, self._limited(receive), send_counted)
        except ApiError as err:
            await _error(send_counted, err, answered[0])
        except _ClientGone:
            status[0] = CLIENT_GONE
        except MemoryError:
            await _error(send_counted, out_of_memory(), answered[0])
        except Exception as err:  # Starlette re-raises what its handler already answered
            if not status[1]:
                traceback.print_exception(err, file=sys.stderr)
                error = ApiError(500, f"internal error: {type(err).__name__}")
                await _error(send_counted, error, answered[0])
        finally:
            state.in_flight -= 1
            if route is None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
            state.metrics.count_request(route, method, status[0], time.perf_counter() - start)

    def _check_length(self, scope) -> None:
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit():
                    raise ApiError(400, "bad Content-Length")
                if int(value) > self.max_bytes:
                    message = f"body of {int(value)} bytes is over {self.max_bytes}"
                    raise ApiError(413, f"{message} (--max-body-bytes)", CLOSE)

    def _limited(self, receive):
        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(
                    413, f"body is over {self.max_bytes} bytes (--max-body-bytes)", CLOSE
                )
            return message

        return receive_limited

    async def _infer(self, scope, receive, send, match, served, answered: list) -> None:
        if scope["method"] != "POST":
            raise ApiError(405, "v2 infer takes POST", {"Allow": "POST"})
        state = self.state
        bundle = answered[0] = state.model(served, match["name"], match["version"])
        body = await self._read(receive)
        header = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header = value.decode("latin-1")
        if len(body) <= INLINE_BYTES:
            parsed, inputs = _parse(body, header, bundle, state.budget)
        else:
            parsed, inputs = await run_in_threadpool(_parse, body, header, bundle, state.budget)
        result = await predict(state, bundle, inputs)
        answer, raw = oip.response(parsed, result.scores, bundle, result.ood)
        head = dumps(answer)
        if raw:
            headers = [(b"inference-header-content-length", b"%d" % len(head))]
            await _send(send, 200, head + raw, b"application/octet-stream", headers)
        else:
            await _send(send, 200, head)

    async def _read(self, receive) -> bytes:
        """The whole body, within --max-body-bytes (413 once over it)."""
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise ApiError(
                    413, f"body is over {self.max_bytes} bytes (--max-body-bytes)", CLOSE
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _ClientGone(Exception):
    """The client disconnected before its body arrived: no one to answer."""


def _parse(body: bytes, header: str | None, bundle, budget):
    parsed = oip.parse(body, header, len(bundle.labels), budget)
    return parsed, parsed.inputs(bundle, budget)


async def _error(send, err: ApiError, bundle) -> None:
    version = bundle.version if bundle is not None else None
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    try:
        await _send(send, err.status, body(err.message, version), headers=headers)
    except RuntimeError:  # a response had started (a route failed mid-answer): nothing to add
        pass


async def _send(send, status: int, content: bytes, media=b"application/json", headers=()):
    head = [(b"content-type", media), (b"content-length", b"%d" % len(content)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": content})


def pinned(request):
    """The models pinned to a request on arrival (served.Served). Every route
    serves with it, so a hot reload never switches the model under a request in flight."""
    return request.scope.get("state", {}).get("served")
