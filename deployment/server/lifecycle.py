"""The server's state and lifecycle: the served bundle (first load, hot reload, swap),
request pinning, and the draining shutdown.

Hot reload (serving the pointer, --watch-pointer, on by default): when the pointer's bytes
change, the bundle it names is loaded, sha256-checked and self-checked in the background
(reload.py), then made current with one assignment. Each request is pinned to the bundle
current when it arrived, so requests in flight finish on the old model, and model_version
names the one that served it. A bad candidate leaves the old model serving and counts
serve_model_load_failures_total{reason}. A pointer to another cell renames the model in the
URLs.

With --workers N (workers.py) each worker process has its own State, and readiness is 200
only once all N have their model: each marks itself ready with a file in env SERVE_READY_DIR.

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
from deployment.server.bundle import load_bundle
from deployment.server.errors import ApiError, JSONResponse
from deployment.server.feedback_store import FeedbackStore
from deployment.server.options import Config
from deployment.server.reload import (
    CandidateError,
    PointerWatcher,
    load_candidate,
    read_pointer,
    self_check,
)
from deployment.server.retention import Sweeper
from deployment.server.telemetry import Metrics

READY_DIR = "SERVE_READY_DIR"  # --workers N > 1: a file per worker with a model (workers.py)


class State:
    """What the routes share: the served bundle (swapped on reload), the request budget, the
    model threads (batcher), the feedback store, the metrics and the shutdown state. A request
    uses the bundle current when it arrived (pinned), so a swap never changes the model under
    a request in flight."""

    def __init__(self, config: Config) -> None:
        self.config, self.bundle, self.store = config, None, None
        self.draining, self.in_flight, self.failed = False, 0, False
        self.metrics = Metrics(config.drift_window)
        self.budget = Budget(config.limits(), config.decode_slots)
        self.batcher = Batcher(
            config.max_images,
            self.budget.max_input_bytes,
            config.model_threads,
            self.metrics.batch_size.observe,
        )
        self.watcher: PointerWatcher | None = None
        self.sweeper: Sweeper | None = None
        self._load_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """A model is loaded and the server is not draining; with --workers N, in every
        worker (a file each in SERVE_READY_DIR)."""
        if self.bundle is None or self.draining:
            return False
        folder = os.environ.get(READY_DIR)
        return not folder or len(os.listdir(folder)) >= self.config.workers

    def version(self) -> str | None:
        return self.bundle.version if self.bundle else None

    def model(self, bundle, name: str, version: str | None = None):
        """The request's pinned `bundle` if it is `name` (and `version`); 404 otherwise, 503
        before the first load."""
        if bundle is None:
            raise ApiError(503, "the model is not loaded yet", {"Retry-After": "1"})
        if name != bundle.name or version not in (None, bundle.version):
            wanted = name if version is None else f"{name} version {version}"
            raise ApiError(404, f"unknown model {wanted!r}")
        return bundle

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
        """Load, warm up and check the first bundle, then mark ready and start watching the
        pointer; a failure logs and stops the server (exit status 1)."""
        config = self.config
        if config.pointer and config.watch_interval:  # before reading: no change is missed
            self.watcher = PointerWatcher(config.pointer, config.watch_interval, self.reload)
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
            if config.bundle is not None:
                started = time.perf_counter()
                bundle = load_bundle(
                    config.bundle, config.intra_op, config.inter_op, backend=config.backend
                )
                self._swap(bundle, self_check(bundle, None), started)
            elif config.pointer.exists() or not self.watcher:
                self._load_pointer()
            else:  # no model yet: the watcher loads the pointer once it appears
                print(f"serve: waiting for {config.pointer}", file=sys.stderr, flush=True)
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

    def stop(self) -> None:
        """Stop the pointer watcher, the retention sweeper and the model threads (the server
        is shutting down)."""
        if self.watcher:
            self.watcher.stop()
        if self.sweeper:
            self.sweeper.stop()
        self.batcher.close()

    def _load_pointer(self) -> None:
        with self._load_lock:
            started = time.perf_counter()
            pointer = read_pointer(self.config.pointer)
            if self.bundle and pointer.sha256 and pointer.sha256[:12] == self.bundle.version:
                print(f"serve: pointer changed, same model {self.bundle.version}", file=sys.stderr)
                return  # only the pointer's metrics or paths changed
            config = self.config
            bundle, checked = load_candidate(
                pointer, config.intra_op, config.inter_op, backend=config.backend
            )
            self._swap(bundle, checked, started)

    def _swap(self, bundle, checked: str, started: float) -> None:
        from PIL import Image as PILImage

        PILImage.MAX_IMAGE_PIXELS = self.config.max_pixels  # after the bundle's own value
        drift = self.metrics.drift.reset(bundle)  # before the swap: no old predictions in it
        old, self.bundle = self.bundle, bundle  # one assignment: requests see old or new
        if old is None and (folder := os.environ.get(READY_DIR)):
            Path(folder, str(os.getpid())).touch()  # this worker is ready (workers.py)
        seconds = time.perf_counter() - started
        self.metrics.load_seconds.set(seconds)
        self.metrics.swap_model(old, bundle)
        if old is not None:
            self.metrics.reloads.inc()
        where = f"from {bundle.path}; serving module {bundle.serving.__file__}"
        print(
            f"serve: ready: {bundle.name} version {bundle.version} {where} "
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
