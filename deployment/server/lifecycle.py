"""The server's state and lifecycle: the served models (served.py: first load, hot reload,
swap), and the draining shutdown.

Hot reload (serving the pointers, --watch-pointer, on by default): when a dataset's pointer
changes, the bundle it names is loaded, sha256-checked and self-checked in the background
(reload.py), then made current with one assignment. Each request is pinned to the models
current when it arrived, so requests in flight finish on the old model, and model_version
names the one that served it. A bad candidate leaves the old model serving and counts
serve_model_load_failures_total{reason}. Other datasets' models are not touched.

With --workers N (workers.py) each worker process has its own State, and readiness is 200
only once all N have their models: each marks itself ready with a file in env
SERVE_READY_DIR.

SIGTERM: readiness turns 503 at once, new requests get 503 {"error": "shutting down"}
(door.py), requests in flight finish (for at least --drain-seconds, at most
--shutdown-timeout), then the process exits with status 0 (1 when the first load failed).
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from deployment.server import ood
from deployment.server.batcher import Batcher
from deployment.server.budget import Budget
from deployment.server.errors import ApiError, JSONResponse
from deployment.server.feedback_store import FeedbackStore
from deployment.server.options import Config
from deployment.server.reload import CandidateError
from deployment.server.retention import Sweeper
from deployment.server.served import READY_DIR, Models, Served
from deployment.server.telemetry import Metrics

__all__ = ["READY_DIR", "DrainingServer", "State"]


class State:
    """What the routes share: the served models (served.py: swapped on reload), the request
    budget, the model threads (batcher), the feedback store, the metrics and the shutdown
    state. A request uses the models current when it arrived (pinned), so a swap never
    changes the model under a request in flight."""

    def __init__(self, config: Config) -> None:
        self.config, self.store = config, None
        self.draining, self.in_flight, self.failed = False, 0, False
        self.metrics = Metrics(config.drift_window)
        self.budget = Budget(config.limits(), config.decode_slots)
        self.batcher = Batcher(
            config.max_images,
            self.budget.max_input_bytes,
            config.model_threads,
            self.metrics.batch_size.observe,
        )
        self.models = Models(config, self._prepare, self._swapped)
        self.models.on_change = self.reload
        self.sweeper: Sweeper | None = None

    @property
    def served(self) -> Served:
        """The models served now (door.py pins it to each request)."""
        return self.models.served

    @property
    def ready(self) -> bool:
        """Every model is loaded and the server is not draining (served.Models.ready)."""
        return not self.draining and self.models.ready

    def version(self, served: Served | None = None) -> str | None:
        """The model_version of an answer that names no model: the only model's."""
        only = (served or self.served).only
        return only.version if only else None

    def model(self, served: Served | None, name: str, version: str | None = None):
        """The model a request names (and its version) among those pinned to it; 404
        otherwise, 503 before the first load."""
        return (served or Served()).find(name, version)

    def reply(self, data: dict, status: int = 200, bundle=None) -> JSONResponse:
        version = bundle.version if bundle else self.version()
        return JSONResponse({**data, "model_version": version}, status_code=status)

    def screen(self, bundle, images: list[np.ndarray], probs: np.ndarray, headers=None):
        """Each image's out-of-distribution score (ood.for_images: [{"score", "reasons"}], None
        when the bundle has no input_stats.json), counted in /metrics. Raises ApiError 422
        when one is over --ood-threshold, naming the statistic and its training range."""
        results = ood.for_images(bundle, images, probs, headers)
        if results is not None:
            self.metrics.observe_ood(results)
            if why := ood.refusal(results, self.config.ood_threshold):
                self.metrics.ood_refused.inc()
                raise ApiError(422, why)
        return results

    def load(self) -> None:
        """Open the feedback store, then load, warm up and check the models and start
        watching their pointers; a failure logs and stops the server (exit status 1)."""
        config = self.config
        try:
            self.store = FeedbackStore(
                config.feedback_dir,
                shared=config.workers > 1,
                store_uploads=config.store_uploads,
                retention_days=config.retention_days,
                pending_minutes=config.pending_minutes,
                review_agree=config.review_agree,
                review_flag_score=config.review_flag_score,
            )
            self.sweeper = Sweeper(self.store)  # purges now, then hourly
            self.models.start()
        except Exception as err:
            print(f"serve: cannot load: {err!r}", file=sys.stderr, flush=True)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)

    def reload(self, path: Path) -> None:
        """A pointer changed: load and check its bundle, then swap it in. A bad candidate
        is counted (serve_model_load_failures_total) and the old model keeps serving."""
        try:
            self.models.reload(path)
        except Exception as err:  # never let the watcher thread die
            reason = err.reason if isinstance(err, CandidateError) else "load"
            self.metrics.load_failures.labels(reason).inc()
            kept = self.served.models.get(path.parent.name)
            which = kept.version if kept else "nothing"
            print(f"serve: kept {which}: {reason}: {path}: {err}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop the pointer watchers, the retention sweeper and the model threads (the server
        is shutting down)."""
        self.models.stop()
        if self.sweeper:
            self.sweeper.stop()
        self.batcher.close()

    def _prepare(self, key: str, bundle) -> str:
        """Before `bundle` serves as `key`: its drift window starts empty (no old model's
        predictions in it) and decoding uses the server's pixel limit."""
        from PIL import Image as PILImage

        PILImage.MAX_IMAGE_PIXELS = self.config.max_pixels  # after the bundle's own value
        return self.metrics.drift(key).reset(bundle)

    def _swapped(self, key: str, old, bundle, seconds: float, checked: str, drift: str) -> None:
        self.metrics.load_seconds.set(seconds)
        self.metrics.swap_model(old, bundle)
        if old is not None:
            self.metrics.reloads.inc()
        where = f"from {bundle.path}; serving module {bundle.serving.__file__}"
        print(
            f"serve: ready: {key}: {bundle.name} version {bundle.version} {where} "
            f"(backend {bundle.backend}; loaded and checked in {seconds:.2f} s: {checked}; "
            f"drift: {drift})",
            file=sys.stderr,
            flush=True,
        )


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
