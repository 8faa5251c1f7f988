"""HTTP server for one export bundle: Open Inference Protocol v2, TF Serving v1, a web page.

Reads the bundle named by the production pointer deployment/production.json (or --bundle)
through deployment.bundle.load_bundle; writes feedback as a seed-format dataset under
--feedback-dir (deployment/feedback.py).

Run: python -m deployment.serve --host 127.0.0.1 --port 8080 [--bundle PATH | --pointer PATH]

Endpoints (every JSON answer carries model_version; errors are {"error": ...}):
    GET  /v2/health/live, /v2/health/ready, /v2            server health and metadata
    GET  /v2/models/{name}[/versions/{v}][/ready]          model metadata / readiness
    POST /v2/models/{name}[/versions/{v}]/infer            v2 infer (see deployment/oip.py)
    POST /v2/repository/index                              the one loaded model
    GET  /v1/models/{name}, POST /v1/models/{name}:predict  TF Serving {"instances": [{"b64"}]}
    GET  /, POST /predict (image upload), POST /feedback    for people (deployment/human.py)
    GET  /metrics                                           Prometheus (deployment/telemetry.py)
Readiness is 503 until the model is loaded and a warm-up inference has run.

Hot reload (serving the pointer, --watch-pointer, on by default): when the pointer's bytes
change, the bundle it names is loaded, sha256-checked and self-checked in the background
(deployment/reload.py), then swapped in with one assignment. Each request is pinned to the
bundle current when it arrived, so in-flight requests finish on the old model and its
model_version is the one that served it. A bad candidate leaves the old model serving and
counts serve_model_load_failures_total{reason}. A pointer to another cell renames the model
in the URLs; clients that name the old cell then get 404.

SIGTERM: readiness turns 503 at once, new requests get 503 {"error": "shutting down"},
requests in flight finish (for at least --drain-seconds, at most --shutdown-timeout), then
the process exits with status 0 (1 when the first load failed).
"""

import argparse
import base64
import binascii
import json
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deployment import human, oip
from deployment.bundle import load_bundle
from deployment.feedback import FeedbackStore
from deployment.inference import ApiError, decode_image, pinned, predict_arrays
from deployment.reload import (
    CandidateError,
    PointerWatcher,
    load_candidate,
    read_pointer,
    self_check,
)
from deployment.telemetry import Guard, Metrics

POINTER = Path("deployment/production.json")
SERVER = {"name": "reprovision", "version": "0.1.0", "extensions": oip.EXTENSIONS}
ALWAYS_ANSWERED = ("/v2/health/live", "/v2/health/ready", "/metrics")  # also while draining


@dataclass
class Config:
    bundle: Path | None  # serve this bundle as is; None: the one `pointer` names
    pointer: Path | None = None  # the production pointer (deployment/production.json)
    watch_interval: float | None = None  # seconds between pointer polls; None: no reload
    feedback_dir: Path = Path("datasets/raw/feedback")  # a seed-format dataset (feedback.py)
    max_body_bytes: int = 16 << 20  # 16 MiB: a few large photos, base64 included
    max_pixels: int = 40_000_000  # per request; also PIL.Image.MAX_IMAGE_PIXELS
    intra_op: int | None = None
    inter_op: int | None = None
    drain_seconds: float = 2.0  # SIGTERM: readiness is false at least this long before exit
    shutdown_timeout: float = 30.0  # SIGTERM: the longest wait for in-flight requests


class State:
    """What the routes share: the served bundle (swapped on reload), the feedback store and
    the shutdown state. A request uses the bundle current when it arrived (pinned), so a
    swap never changes the model under a request in flight."""

    def __init__(self, config: Config) -> None:
        self.config, self.bundle, self.store = config, None, None
        self.draining, self.in_flight, self.failed = False, 0, False
        self.metrics = Metrics()
        self.watcher: PointerWatcher | None = None
        self._load_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.bundle is not None and not self.draining

    def version(self) -> str | None:
        return self.bundle.version if self.bundle else None

    def model(self, request: Request, name: str, version: str | None = None):
        """The request's bundle if it is `name` (and `version`); 404 otherwise, 503 not ready."""
        bundle = pinned(request)
        if bundle is None:
            raise ApiError(503, "the model is not loaded yet")
        if name != bundle.name or version not in (None, bundle.version):
            wanted = name if version is None else f"{name} version {version}"
            raise ApiError(404, f"unknown model {wanted!r}")
        return bundle

    def reply(self, data: dict, status: int = 200, bundle=None) -> JSONResponse:
        version = bundle.version if bundle else self.version()
        return JSONResponse({**data, "model_version": version}, status_code=status)

    def load(self) -> None:
        """Load, warm up and check the first bundle, then mark ready and start watching the
        pointer; a failure logs and stops the server (exit status 1)."""
        config = self.config
        if config.pointer and config.watch_interval:  # before reading: no change is missed
            self.watcher = PointerWatcher(config.pointer, config.watch_interval, self.reload)
        try:
            self.store = FeedbackStore(config.feedback_dir)
            if config.bundle is not None:
                started = time.perf_counter()
                bundle = load_bundle(config.bundle, config.intra_op, config.inter_op)
                self._swap(bundle, self_check(bundle, None), started)
            else:
                self._load_pointer()
        except Exception as err:
            print(f"serve: cannot load: {err!r}", file=sys.stderr, flush=True)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self.watcher:
            self.watcher.start()

    def reload(self) -> None:
        """The pointer changed: load and check its bundle, then swap it in. A bad candidate
        is counted (serve_model_load_failures_total) and the old model keeps serving."""
        try:
            self._load_pointer()
        except Exception as err:  # never let the watcher thread die
            reason = err.reason if isinstance(err, CandidateError) else "load"
            self.metrics.load_failures.labels(reason).inc()
            print(f"serve: kept {self.version()}: {reason}: {err}", file=sys.stderr, flush=True)

    def _load_pointer(self) -> None:
        with self._load_lock:
            started = time.perf_counter()
            pointer = read_pointer(self.config.pointer)
            if self.bundle and pointer.sha256 and pointer.sha256[:12] == self.bundle.version:
                print(f"serve: pointer changed, same model {self.bundle.version}", file=sys.stderr)
                return  # only the pointer's metrics or paths changed
            bundle, checked = load_candidate(pointer, self.config.intra_op, self.config.inter_op)
            self._swap(bundle, checked, started)

    def _swap(self, bundle, checked: str, started: float) -> None:
        from PIL import Image as PILImage

        PILImage.MAX_IMAGE_PIXELS = self.config.max_pixels  # after the bundle's own value
        old, self.bundle = self.bundle, bundle  # one assignment: requests see old or new
        seconds = time.perf_counter() - started
        self.metrics.load_seconds.set(seconds)
        self.metrics.model.labels(bundle.name, bundle.version).set(1)
        if old is not None:
            self.metrics.reloads.inc()
            if (old.name, old.version) != (bundle.name, bundle.version):
                self.metrics.model.remove(old.name, old.version)
        where = f"from {bundle.path}; serving module {bundle.serving.__file__}"
        print(
            f"serve: ready: {bundle.name} version {bundle.version} {where} "
            f"(loaded and checked in {seconds:.2f} s: {checked})",
            file=sys.stderr,
            flush=True,
        )


class Lifecycle:
    """ASGI middleware: pin the current bundle to each request and count requests in
    flight; once draining (SIGTERM), answer 503 to all but health and metrics."""

    def __init__(self, app, state: State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state
        if state.draining and scope["path"] not in ALWAYS_ANSWERED:
            body = json.dumps({"error": "shutting down", "model_version": state.version()})
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        scope.setdefault("state", {})["bundle"] = state.bundle
        state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1


def _routes_v2(app: FastAPI, state: State) -> None:
    @app.get("/v2/health/live")
    def live():
        return state.reply({"live": True})

    @app.get("/v2/health/ready")
    def ready():
        return state.reply({"ready": state.ready}, 200 if state.ready else 503)

    @app.get("/v2")
    def server_metadata():
        return state.reply(SERVER)

    @app.post("/v2/repository/index")
    def repository_index(request: Request):
        bundle = pinned(request)
        models = [{"name": bundle.name, "version": bundle.version}] if bundle else []
        return JSONResponse([{**m, "state": "READY"} for m in models])

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    def model_metadata(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        return state.reply(oip.model_metadata(bundle), bundle=bundle)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    def model_ready(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        return state.reply({"name": bundle.name, "ready": True}, bundle=bundle)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        bundle = state.model(request, name, version)
        body = await request.body()
        header = request.headers.get("inference-header-content-length")
        parsed, tail = oip.parse_body(body, header)
        limit = state.config.max_pixels
        response, raw, probs = await run_in_threadpool(oip.infer, parsed, tail, bundle, limit)
        state.metrics.observe_predictions(probs, bundle.labels)
        if not raw:
            return JSONResponse(response)
        head = json.dumps(response).encode()
        return Response(
            head + raw,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )


def _routes_v1(app: FastAPI, state: State) -> None:
    @app.get("/v1/models/{name}")
    def model_status(request: Request, name: str):
        bundle = state.model(request, name)
        status = {"error_code": "OK", "error_message": ""}
        version = {"version": bundle.version, "state": "AVAILABLE", "status": status}
        return state.reply({"model_version_status": [version]}, bundle=bundle)

    @app.post("/v1/models/{name}:predict")
    async def predict_v1(request: Request, name: str):
        bundle = state.model(request, name)
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
        limit = state.config.max_pixels

        def run():
            return predict_arrays(bundle, [decode_image(b, bundle, limit) for b in images])

        probs = await run_in_threadpool(run)
        state.metrics.observe_predictions(probs, bundle.labels)
        predictions = [[float(v) for v in row] for row in probs]
        return state.reply({"predictions": predictions}, bundle=bundle)


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
        if state.watcher:
            state.watcher.stop()

    app = FastAPI(
        title="reprovision", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.serve = state
    _error_handlers(app, state)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _routes_v2(app, state)
    _routes_v1(app, state)
    human.add_routes(app, state)
    app.add_middleware(Lifecycle, state=state)
    app.add_middleware(  # outermost: counts the 503s of draining too
        Guard, metrics=state.metrics, max_bytes=config.max_body_bytes, version=state.version
    )
    return app


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM (or SIGINT) drains first: readiness turns false and new
    requests get 503 while requests in flight finish, for at least drain_seconds; then
    uvicorn closes the listener and exits with status 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, state: State) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame) -> None:
        # Unlike uvicorn's own handler, the signal is not re-raised after shutdown (that
        # would end the process with -SIGTERM instead of status 0).
        if self.state.draining:
            self.should_exit = self.force_exit = True
            return
        self.state.draining = True
        print(f"serve: {signal.Signals(sig).name}: draining", file=sys.stderr, flush=True)
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        config, state = self.state.config, self.state
        start = time.monotonic()
        deadline = start + config.shutdown_timeout
        while time.monotonic() < deadline:
            if state.in_flight == 0 and time.monotonic() - start >= config.drain_seconds:
                break
            time.sleep(0.05)
        self.should_exit = True


def bundle_from_pointer(pointer: Path) -> Path:
    """The bundle folder deployment/production.json names (relative to the repo root)."""
    return read_pointer(pointer).bundle


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bundle", type=Path, help="serve this bundle (no pointer, no reload)")
    parser.add_argument("--pointer", type=Path, default=POINTER, help="default: %(default)s")
    parser.add_argument(
        "--watch-pointer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reload when the pointer changes (serving the pointer only; default: on)",
    )
    parser.add_argument("--watch-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--feedback-dir", type=Path, default=Config.feedback_dir)
    parser.add_argument("--max-body-bytes", type=int, default=Config.max_body_bytes)
    parser.add_argument("--max-pixels", type=int, default=Config.max_pixels)
    parser.add_argument("--intra-op", type=int, help="TF intra-op threads (default: CPUs)")
    parser.add_argument("--inter-op", type=int, help="TF inter-op threads (default: 2)")
    parser.add_argument("--drain-seconds", type=float, default=Config.drain_seconds)
    parser.add_argument("--shutdown-timeout", type=float, default=Config.shutdown_timeout)
    args = parser.parse_args()
    bundle = args.bundle or bundle_from_pointer(args.pointer)
    if not (bundle / "model.keras").is_file():
        parser.error(f"{bundle} is not a bundle (no model.keras)")
    return args


def main() -> None:
    args = _parse_args()
    config = Config(
        bundle=args.bundle,
        pointer=None if args.bundle else args.pointer,
        watch_interval=args.watch_interval if args.watch_pointer and not args.bundle else None,
        feedback_dir=args.feedback_dir,
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        intra_op=args.intra_op,
        inter_op=args.inter_op,
        drain_seconds=args.drain_seconds,
        shutdown_timeout=args.shutdown_timeout,
    )
    app = create_app(config)
    server_config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5
    )
    DrainingServer(server_config, app.state.serve).run()
    sys.exit(1 if app.state.serve.failed else 0)


if __name__ == "__main__":
    main()
