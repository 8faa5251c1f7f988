"""HTTP server for one export bundle: Open Inference Protocol v2, TF Serving v1, a web page.

Reads the bundle named by deployment/production.json (or --bundle) through
deployment.bundle.load_bundle; writes feedback records under --feedback-dir.

Run: python -m deployment.serve --host 127.0.0.1 --port 8080 [--bundle PATH]

Endpoints (every JSON answer carries model_version; errors are {"error": ...}):
    GET  /v2/health/live, /v2/health/ready, /v2            server health and metadata
    GET  /v2/models/{name}[/versions/{v}][/ready]          model metadata / readiness
    POST /v2/models/{name}[/versions/{v}]/infer            v2 infer (see deployment/oip.py)
    POST /v2/repository/index                              the one loaded model
    GET  /v1/models/{name}, POST /v1/models/{name}:predict  TF Serving {"instances": [{"b64"}]}
    GET  /, POST /predict (image upload), POST /feedback    for people (deployment/human.py)
    GET  /metrics                                           Prometheus (deployment/telemetry.py)
Readiness is 503 until the model is loaded and a warm-up inference has run.
"""

import argparse
import base64
import binascii
import json
import os
import signal
import sys
import threading
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deployment import human, oip
from deployment.bundle import load_bundle
from deployment.feedback import FeedbackStore
from deployment.inference import ApiError, decode_image, predict_arrays
from deployment.telemetry import Guard, Metrics

POINTER = Path("deployment/production.json")
SERVER = {"name": "reprovision", "version": "0.1.0", "extensions": oip.EXTENSIONS}


@dataclass
class Config:
    bundle: Path
    feedback_dir: Path = Path("deployment/feedback")
    max_body_bytes: int = 16 << 20  # 16 MiB: a few large photos, base64 included
    max_pixels: int = 40_000_000  # per request; also PIL.Image.MAX_IMAGE_PIXELS
    intra_op: int | None = None
    inter_op: int | None = None


class State:
    """What the routes share: the bundle once loaded and warmed up, and its feedback store."""

    def __init__(self, config: Config) -> None:
        self.config, self.bundle, self.store, self.ready = config, None, None, False
        self.metrics = Metrics()

    def version(self) -> str | None:
        return self.bundle.version if self.bundle else None

    def model(self, name: str, version: str | None = None):
        """The loaded bundle if it is `name` (and `version`); 404 otherwise, 503 not ready."""
        if not self.ready:
            raise ApiError(503, "the model is not loaded yet")
        if name != self.bundle.name or version not in (None, self.bundle.version):
            wanted = name if version is None else f"{name} version {version}"
            raise ApiError(404, f"unknown model {wanted!r}")
        return self.bundle

    def reply(self, data: dict, status: int = 200) -> JSONResponse:
        return JSONResponse({**data, "model_version": self.version()}, status_code=status)

    def load(self) -> None:
        """Load, warm up, then mark ready; a load failure logs and stops the server."""
        try:
            from PIL import Image as PILImage

            bundle = load_bundle(self.config.bundle, self.config.intra_op, self.config.inter_op)
            bundle.warm_up()
            PILImage.MAX_IMAGE_PIXELS = self.config.max_pixels  # after the bundle's own value
            self.store = FeedbackStore(self.config.feedback_dir, bundle.labels)
            self.bundle, self.ready = bundle, True
            self.metrics.model.labels(bundle.name, bundle.version).set(1)
            where = f"from {bundle.path}; serving module {bundle.serving.__file__}"
            print(f"serve: ready: {bundle.name} version {bundle.version} {where}", file=sys.stderr)
        except Exception as err:
            print(f"serve: cannot load {self.config.bundle}: {err!r}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)


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
    def repository_index():
        models = (
            [{"name": state.bundle.name, "version": state.bundle.version}] if state.ready else []
        )
        return JSONResponse([{**m, "state": "READY"} for m in models])

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    def model_metadata(name: str, version: str | None = None):
        return state.reply(oip.model_metadata(state.model(name, version)))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: str | None = None):
        bundle = state.model(name, version)
        return state.reply({"name": bundle.name, "ready": True})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        bundle = state.model(name, version)
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
    def model_status(name: str):
        bundle = state.model(name)
        status = {"error_code": "OK", "error_message": ""}
        version = {"version": bundle.version, "state": "AVAILABLE", "status": status}
        return state.reply({"model_version_status": [version]})

    @app.post("/v1/models/{name}:predict")
    async def predict_v1(request: Request, name: str):
        bundle = state.model(name)
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
        return state.reply({"predictions": [[float(v) for v in row] for row in probs]})


def create_app(config: Config) -> FastAPI:
    """The FastAPI app; the bundle loads in a background thread once the server starts."""
    state = State(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, name="load-bundle", daemon=True).start()
        yield

    app = FastAPI(
        title="reprovision", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return state.reply({"error": err.message}, err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return state.reply({"error": str(err.detail)}, err.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return state.reply({"error": f"bad request: {err.errors()[:1]}"}, 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        traceback.print_exception(err, file=sys.stderr)
        return state.reply({"error": f"internal error: {type(err).__name__}"}, 500)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _routes_v2(app, state)
    _routes_v1(app, state)
    human.add_routes(app, state)
    app.add_middleware(
        Guard, metrics=state.metrics, max_bytes=config.max_body_bytes, version=state.version
    )
    return app


def bundle_from_pointer(pointer: Path) -> Path:
    """The bundle folder deployment/production.json names (relative to the repo root)."""
    bundle = Path(json.loads(pointer.read_text())["bundle"])
    return bundle if bundle.is_absolute() else pointer.resolve().parents[1] / bundle


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bundle", type=Path, help=f"default: the bundle {POINTER} names")
    parser.add_argument("--feedback-dir", type=Path, default=Config.feedback_dir)
    parser.add_argument("--max-body-bytes", type=int, default=Config.max_body_bytes)
    parser.add_argument("--max-pixels", type=int, default=Config.max_pixels)
    parser.add_argument("--intra-op", type=int, help="TF intra-op threads (default: CPUs)")
    parser.add_argument("--inter-op", type=int, help="TF inter-op threads (default: 2)")
    args = parser.parse_args()
    bundle = args.bundle or bundle_from_pointer(POINTER)
    if not (bundle / "model.keras").is_file():
        parser.error(f"{bundle} is not a bundle (no model.keras)")
    config = Config(
        bundle,
        args.feedback_dir,
        args.max_body_bytes,
        args.max_pixels,
        args.intra_op,
        args.inter_op,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
