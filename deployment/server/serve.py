"""HTTP server for one export bundle: Open Inference Protocol v2, TF Serving v1, a web page.

Reads the bundle named by the production pointer deployment/production.json (or --bundle)
through deployment.server.bundle.load_bundle (--backend auto | onnx | tf); writes feedback as a
seed-format dataset under --feedback-dir (deployment/server/feedback_store.py).

Run: python -m deployment.server.serve --host 127.0.0.1 --port 8080 [--bundle PATH]
        [--workers N] [--backend auto] [--drift-window 500]
        [--batch-max-size 1 --batch-timeout-ms 2]

Endpoints (every JSON answer carries model_version; errors are {"error": ...}):
    GET  /v2/health/live, /v2/health/ready, /v2            server health (live: with the
                                                            answering process's pid) and metadata
    GET  /v2/models/{name}[/versions/{v}][/ready]          model metadata / readiness
    POST /v2/models/{name}[/versions/{v}]/infer            v2 infer (see deployment/server/oip.py)
    POST /v2/repository/index                              the one loaded model
    GET  /v1/models/{name}[/versions/{v}]                  TF Serving model status
    POST /v1/models/{name}[/versions/{v}]:predict          TF Serving {"instances": [{"b64"}]}
    GET  /, POST /predict (image upload), POST /feedback    for people (human.py)
    GET  /review, POST /review/{request_id}                 accept or reject feedback (review.py)
    DELETE /feedback/{request_id}                           remove a stored upload (retention.py)
    POST /explain (image upload)                            heat map PNG and scores (explain.py)
    GET  /metrics                                           Prometheus (telemetry.py)
Readiness is 503 until the model is loaded and a warm-up inference has run. A version is
the bundle's (sha256(model.keras)[:12]); any other is 404.

/metrics also compares the last --drift-window predictions with the bundle's test-set
reference.json (serve_drift_psi and friends, deployment/server/drift.py). --batch-max-size N > 1
gathers concurrent one-image requests into model calls of up to N images, waiting at most
--batch-timeout-ms (deployment/server/batching.py).

Serving the pointer, the server hot-reloads when it changes, and SIGTERM drains before exit:
both are in lifecycle.py. --workers N (default: the cores) runs N such servers as processes on
one port, each reloading on its own; /metrics adds theirs up (deployment/server/workers.py).
JSON is read and written with orjson; uvicorn runs on httptools and uvloop (uvicorn[standard]).
Small tensor v2 infer requests on ONNX are answered in front of FastAPI, batched per turn of
the event loop (deployment/server/fast_infer.py).
"""

import base64
import binascii
import ctypes
import os
import socket
import sys
import threading
import traceback
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deployment.server import explain, human, oip, options, review, workers
from deployment.server.fast_infer import FastInfer
from deployment.server.inference import ApiError, JSONResponse, decode_images, dumps, pinned
from deployment.server.lifecycle import Config, DrainingServer, Lifecycle, State
from deployment.server.telemetry import Guard

__all__ = ["Config", "DrainingServer", "Lifecycle", "State", "create_app", "main"]
SERVER = {"name": "reprovision", "version": "0.1.0", "extensions": oip.EXTENSIONS}


def _routes_v2(app: FastAPI, state: State) -> None:
    # async: answered on the event loop, without the hop to a worker thread a `def` route takes
    @app.get("/v2/health/live")
    async def live():
        return state.reply({"live": True, "pid": os.getpid()})  # which --workers process

    @app.get("/v2/health/ready")
    async def ready():
        ready = state.ready
        return state.reply({"ready": ready}, 200 if ready else 503)

    @app.get("/v2")
    async def server_metadata():
        return state.reply(SERVER)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request):
        bundle = pinned(request)
        models = [{"name": bundle.name, "version": bundle.version}] if bundle else []
        return JSONResponse([{**m, "state": "READY"} for m in models])

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        return state.reply(oip.model_metadata(bundle), bundle=bundle)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        return state.reply({"name": bundle.name, "ready": True}, bundle=bundle)


def _route_infer(app: FastAPI, state: State) -> None:
    """v2 infer as a plain Starlette route, first in the table (no parameter solving). Small
    tensor requests on ONNX never get here: fast_infer.FastInfer answers them in front of
    the app; this route takes encoded images, binary tensors and TensorFlow, in a thread."""

    routes = {}  # versioned?: its Route, for the `route` label of the metrics (telemetry.Guard)

    async def infer(request: Request):
        path = request.path_params
        request.scope["route"] = routes["version" in path]
        bundle = state.model(request, path["name"], path.get("version"))
        body = await request.body()
        header = request.headers.get("inference-header-content-length")
        parsed = oip.parse(body, header, len(bundle.labels))

        def run():  # decode, predict, score (ood.py: 422 over --ood-threshold)
            images = parsed.images(bundle, state.limits)
            probs = state.predict(bundle, images)
            return probs, state.screen(bundle, images, probs, parsed.headers)

        probs, ood = await run_in_threadpool(run)
        state.metrics.observe_predictions(probs, bundle)
        answer, raw = oip.response(parsed, probs, bundle, ood)
        if not raw:
            return JSONResponse(answer)
        head = dumps(answer)
        return Response(
            head + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        app.router.add_route(path, infer, methods=["POST"])
        routes["{version}" in path] = app.router.routes[-1]


def _routes_v1(app: FastAPI, state: State) -> None:
    @app.get("/v1/models/{name}")
    @app.get("/v1/models/{name}/versions/{version}")
    async def model_status(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        status = {"error_code": "OK", "error_message": ""}
        version = {"version": bundle.version, "state": "AVAILABLE", "status": status}
        return state.reply({"model_version_status": [version]}, bundle=bundle)

    @app.post("/v1/models/{name}:predict")
    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def predict_v1(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        body, _ = oip.parse_body(await request.body(), None)
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise ApiError(400, 'send {"instances": [{"b64": "<base64 image>"}, ...]}')
        if not all(isinstance(i, dict) and set(i) == {"b64"} for i in instances):
            raise ApiError(400, 'each instance must be {"b64": "<base64 image>"}')
        try:
            images = [base64.b64decode(i["b64"], validate=True) for i in instances]
        except (binascii.Error, ValueError, TypeError):
            raise ApiError(400, "b64 is not valid base64") from None

        headers = []  # each image's (width, height, mode): the OOD score's (ood.py)

        def run():  # decode, predict, score (422 over --ood-threshold)
            arrays = decode_images(images, bundle, state.limits, headers)
            probs = state.predict(bundle, arrays)
            return probs, state.screen(bundle, arrays, probs, headers)

        probs, ood = await run_in_threadpool(run)
        state.metrics.observe_predictions(probs, bundle)
        predictions = [[float(v) for v in row] for row in probs]
        scores = {} if ood is None else {"ood_score": [result["score"] for result in ood]}
        return state.reply({"predictions": predictions, **scores}, bundle=bundle)


def _error_handlers(app: FastAPI, state: State) -> None:
    """Every error is JSON {"error": ...} with the model_version of the request's bundle."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return state.reply({"error": err.message}, err.status, pinned(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return state.reply({"error": str(err.detail)}, err.status_code, pinned(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return state.reply({"error": f"bad request: {err.errors()[:1]}"}, 400, pinned(request))

    @app.exception_handler(MemoryError)
    async def out_of_memory(request: Request, err: MemoryError):
        # the server's state, not the client's request: retryable, never a 400
        error = {"error": "the server is out of memory; retry later"}
        return state.reply(error, 503, pinned(request))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        traceback.print_exception(err, file=sys.stderr)
        error = {"error": f"internal error: {type(err).__name__}"}
        return state.reply(error, 500, pinned(request))


def create_app(config: Config) -> FastAPI:
    """The FastAPI app; the bundle loads in a background thread once the server starts."""
    state = State(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, name="load-bundle", daemon=True).start()
        yield
        state.stop()

    app = FastAPI(
        title="reprovision",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # /metrics is Prometheus (telemetry.py); FastAPI's own OpenTelemetry looks for a
        # configured provider on every request (about 10 us of the hot path)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.serve = state
    _error_handlers(app, state)
    _route_infer(app, state)

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    _routes_v2(app, state)
    _routes_v1(app, state)
    human.add_routes(app, state)
    review.add_routes(app, state)  # GET /review: feedback trains once accepted
    explain.add_routes(app, state)
    app.add_middleware(Lifecycle, state=state)
    app.add_middleware(  # outermost: counts the 503s of draining too
        Guard, metrics=state.metrics, max_bytes=config.max_body_bytes, version=state.version
    )
    return app


def _few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena and keeps what a decode
    freed in it; with 2 the server grows far less under large images (bench/README.md,
    server_memory). MALLOC_ARENA_MAX, when set, wins."""
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX; not glibc: no such lib
    except (OSError, AttributeError):
        pass


def run(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8080,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Serve `config` in this process until SIGTERM (drained), on host:port or on `sockets`
    already listening (a --workers process's); return the exit status, 1 when the first load
    failed."""
    _few_malloc_arenas()  # before any thread allocates
    app = create_app(config)
    server_config = uvicorn.Config(  # http and loop "auto": httptools and uvloop
        FastInfer(app, app.state.serve),  # small tensor v2 infer without the framework
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # not a logger call per request (warning hides them anyway)
        timeout_graceful_shutdown=5,
    )
    DrainingServer(server_config, app.state.serve).run(sockets)
    return 1 if app.state.serve.failed else 0


def main() -> None:
    args = options.parse(doc=__doc__)
    config = options.config(args)
    if args.workers > 1:
        sys.exit(workers.supervise(config, args.host, args.port, args.workers))
    sys.exit(run(config, args.host, args.port))


if __name__ == "__main__":
    main()
