"""HTTP server for every dataset's production model: Open Inference Protocol v2, TF Serving v1,
a web page.

Reads the bundles named by the production pointers deployment/<dataset>/production.json
(or one --bundle)
through deployment.server.bundle.load_bundle (--backend auto | onnx | tf); writes feedback as a
seed-format dataset under --feedback-dir (deployment/server/feedback_store.py).

Run: reprovision serve --host 127.0.0.1 --port 8080 [--bundle PATH]
        [--workers N] [--backend auto] [--drift-window 500] [--max-images 256] ...

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
    GET  /openapi.json, /docs                               the API's schema (openapi.py)
Readiness is 503 until the model is loaded and a warm-up inference has run. A version is
the bundle's (sha256(model.keras)[:12]); any other is 404.

/metrics also compares the last --drift-window predictions with the bundle's test-set
reference.json (serve_drift_psi and friends, deployment/server/drift.py).

Every request enters through door.py (draining, the size limit, pinning, metrics, errors);
v2 infer is answered there, the rest here. Every prediction runs predict.predict: images
decoded within the request budget (budget.py), the model threads batching whatever waits
(batcher.py), the OOD screen and the metrics.

Serving the pointer, the server hot-reloads when it changes, and SIGTERM drains before exit:
both are in lifecycle.py. --workers N (default: the cores) runs N such servers as processes on
one port, each reloading on its own; /metrics adds theirs up (deployment/server/workers.py).
JSON is read and written with orjson; uvicorn runs on httptools and uvloop (uvicorn[standard]).
Proxy headers (X-Forwarded-For) are ignored unless --forwarded-allow-ips names the proxy.
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
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException

from deployment.server import explain, human, oip, openapi, options, review, workers
from deployment.server.door import Door, pinned
from deployment.server.errors import ApiError, JSONResponse, out_of_memory
from deployment.server.lifecycle import DrainingServer, State
from deployment.server.options import Config
from deployment.server.predict import Inputs, predict

__all__ = ["Config", "DrainingServer", "State", "create_app", "main"]
SERVER = {"name": "reprovision", "version": "0.1.0", "extensions": oip.EXTENSIONS}
PLATFORMS = {"onnx": "onnxruntime_onnx", "tf": "tensorflow_keras"}  # KServe's names


class _ModelName(StringConvertor):
    """A model name or version in a path: no "/" and no ":" (so /v1/models/{name}:predict is
    never a model named "x:predict", and 405's Allow is exact)."""

    regex = "[^/:]+"


register_url_convertor("model", _ModelName())


def v2_metadata(bundle, name: str) -> dict:
    """The v2 model metadata: name, versions, platform, inputs and outputs (oip.py); the
    cell it is and the labels in `parameters`."""
    return {
        "name": name,
        "versions": [bundle.version],
        "platform": PLATFORMS.get(bundle.backend, bundle.backend),
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, bundle.channels]},
        ],
        "outputs": [{"name": oip.OUTPUT, "datatype": "FP32", "shape": [-1, len(bundle.labels)]}],
        "parameters": {"labels": bundle.labels, "cell": bundle.name, "dataset": bundle.dataset},
    }


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
        served = pinned(request).models
        models = [{"name": k, "version": b.version, "cell": b.name} for k, b in served.items()]
        return JSONResponse([{**m, "state": "READY"} for m in models])

    @app.get("/v2/models/{name:model}")
    @app.get("/v2/models/{name:model}/versions/{version:model}")
    async def model_metadata(request: Request, name: str, version: str | None = None):
        bundle = state.model(pinned(request), name, version)
        return state.reply(v2_metadata(bundle, name), bundle=bundle)

    @app.get("/v2/models/{name:model}/ready")
    @app.get("/v2/models/{name:model}/versions/{version:model}/ready")
    async def model_ready(request: Request, name: str, version: str | None = None):
        bundle = state.model(pinned(request), name, version)
        return state.reply({"name": name, "ready": True}, bundle=bundle)


def _routes_v1(app: FastAPI, state: State) -> None:
    @app.get("/v1/models/{name:model}")
    @app.get("/v1/models/{name:model}/versions/{version:model}")
    async def model_status(request: Request, name: str, version: str | None = None):
        bundle = state.model(pinned(request), name, version)
        status = {"error_code": "OK", "error_message": ""}
        version = {"version": bundle.version, "state": "AVAILABLE", "status": status}
        return state.reply({"model_version_status": [version]}, bundle=bundle)

    @app.post("/v1/models/{name:model}:predict")
    @app.post("/v1/models/{name:model}/versions/{version:model}:predict")
    async def predict_v1(request: Request, name: str, version: str | None = None):
        bundle = state.model(pinned(request), name, version)
        body, _ = oip.parse_body(await request.body(), None, state.budget)
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise ApiError(400, 'send {"instances": [{"b64": "<base64 image>"}, ...]}')
        state.budget.model_input(len(instances), None, bundle)
        if not all(isinstance(i, dict) and set(i) == {"b64"} for i in instances):
            raise ApiError(400, 'each instance must be {"b64": "<base64 image>"}')
        try:
            images = [base64.b64decode(i["b64"], validate=True) for i in instances]
        except (binascii.Error, ValueError, TypeError):
            raise ApiError(400, "b64 is not valid base64") from None
        result = await predict(state, bundle, Inputs(encoded=images))
        predictions = [[float(v) for v in row] for row in result.scores]
        ood = result.ood
        scores = {} if ood is None else {"ood_score": [r["score"] for r in ood]}
        return state.reply({"predictions": predictions, **scores}, bundle=bundle)


def _error_handlers(app: FastAPI, state: State) -> None:
    """Every error is the one JSON body (errors.py) with the model_version of the request's
    bundle; 405 names the methods the path takes (Allow)."""

    def reply(request: Request, err: ApiError):
        served = pinned(request)
        response = state.reply({"error": err.message}, err.status, served and served.only)
        response.headers.update(err.headers)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return reply(request, err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        headers = dict(err.headers or {})
        if err.status_code == 405:
            headers["Allow"] = ", ".join(openapi.allowed(app, request.url.path))
        return reply(request, ApiError(err.status_code, str(err.detail), headers))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return reply(request, ApiError(400, f"bad request: {err.errors()[:1]}"))

    @app.exception_handler(MemoryError)
    async def memory_error(request: Request, err: MemoryError):
        return reply(request, out_of_memory())  # the server's state: retryable, never a 400

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        traceback.print_exception(err, file=sys.stderr)
        return reply(request, ApiError(500, f"internal error: {type(err).__name__}"))


def create_app(config: Config) -> Door:
    """The server's ASGI app: the door (door.py) in front of the FastAPI routes; the bundle
    loads in a background thread once the server starts."""
    state = State(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, name="load-bundle", daemon=True).start()
        yield
        state.stop()

    app = FastAPI(
        title="reprovision",
        version=SERVER["version"],
        description=openapi.DESCRIPTION,
        docs_url=None,  # openapi.add_routes serves /docs from local files, offline
        redoc_url=None,
        openapi_url=None,  # ... and /openapi.json, for the model being served
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # /metrics is Prometheus (telemetry.py); FastAPI's own OpenTelemetry looks for a
        # configured provider on every request (about 10 us of the hot path)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.serve = state
    _error_handlers(app, state)

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    _routes_v2(app, state)
    _routes_v1(app, state)
    human.add_routes(app, state)
    review.add_routes(app, state)  # GET /review: feedback trains once accepted
    explain.add_routes(app, state)
    openapi.add_routes(app, state)  # /openapi.json (v2 infer included) and /docs
    return Door(app, state)


def _malloc_tuning(arenas: int = 2, mmap_threshold: int = 1 << 20) -> None:
    """glibc keeps what a thread freed in that thread's malloc arena, and after a large block
    is freed it raises the size it maps on its own (up to 32 MiB), so a large request body
    or decode then stays in the heap. Two arenas, and blocks of 1 MiB or more always mapped
    on their own (a fixed threshold is never raised), give them back when freed
    (bench/README.md, server_memory). MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ win."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")  # not glibc: no such library, nothing to tune
    except OSError:
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD


def run(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8080,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Serve `config` in this process until SIGTERM (drained), on host:port or on `sockets`
    already listening (a --workers process's); return the exit status, 1 when the first load
    failed."""
    _malloc_tuning()  # before any thread allocates
    door = create_app(config)
    server_config = uvicorn.Config(  # http and loop "auto": httptools and uvloop
        door,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # not a logger call per request (warning hides them anyway)
        timeout_graceful_shutdown=5,
        # a client is the address it connects from, unless it is a proxy named here
        proxy_headers=config.forwarded_allow_ips is not None,
        forwarded_allow_ips=config.forwarded_allow_ips or "",
    )
    DrainingServer(server_config, door.state).run(sockets)
    return 1 if door.state.failed else 0


def main() -> None:
    if (worker := workers.worker_spec()) is not None:  # a --workers process (workers.py)
        config, listener = worker
        sys.exit(run(config, sockets=[listener]))
    args = options.parse(doc=__doc__)
    config = options.config(args)
    if args.workers > 1:
        sys.exit(workers.supervise(config, args.host, args.port, args.workers))
    sys.exit(run(config, args.host, args.port))


if __name__ == "__main__":
    main()
