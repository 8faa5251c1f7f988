"""Prometheus metrics of the server (door.py counts requests, predict.py predictions).

Metrics (GET /metrics):
    serve_requests_total{route,method,status}   every answer, 4xx and 5xx included
    serve_request_seconds{route}                 latency histogram
    serve_model_info{name,version}               1 for the loaded model
    serve_prediction_confidence                  histogram of the top score
    serve_predicted_class_total{model,label}     predictions by served model and top-1 class
    serve_batch_size                             images per model call (batcher.py)
    serve_model_reloads_total, serve_model_load_failures_total{reason},
    serve_model_load_seconds                     hot reload (deployment/server/lifecycle.py)
    serve_drift_window_predictions, serve_drift_psi, serve_confidence_psi,
    serve_confidence_shift{model}                each model's last --drift-window predictions
                                                 against its bundle/reference.json (drift.py)
    serve_ood_score                              histogram of each image's out-of-distribution
                                                 score (deployment/server/ood.py; bundles with
                                                 input_stats.json)
    serve_ood_images_total{reason}               images a check scored above 0, by check
                                                 (long_side, brightness, mode, top_score, ...)
    serve_ood_refused_total                      requests refused with 422 (--ood-threshold)
`route` is the route template ("/v2/models/{name}/infer"), never the raw path, so label
cardinality stays bounded.

With --workers N > 1 (deployment/server/workers.py) PROMETHEUS_MULTIPROC_DIR is set, and
prometheus-client's multiprocess mode keeps every worker's counters, histograms and gauges in
files there; any worker's /metrics adds them up (MultiProcessCollector): counters and
histograms are sums over the workers (serve_model_reloads_total counts each worker's swap,
N per pointer change), serve_model_info is 1 while any live worker serves that version (0
once none does: a series cannot be removed in that mode), serve_model_load_seconds the most
recent load. The drift gauges are the answering worker's own window of its share of the
predictions.
"""

import os

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from deployment.server.drift import DriftCollector, DriftWindow

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
disable_created_metrics()  # the *_created series only add noise here
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
OOD_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)  # le="0.0": images inside every range
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by workers.py for --workers N > 1


class Metrics:
    """The server's metrics, in their own registry (one per app); the drift window holds
    the last `drift_window` predictions."""

    def __init__(self, drift_window: int = 500) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "serve_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "serve_request_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model = Gauge(
            "serve_model_info",
            "Loaded model",
            ["name", "version"],
            registry=r,
            multiprocess_mode="livemax",  # 1 while a live worker serves it
        )
        self.confidence = Histogram(
            "serve_prediction_confidence",
            "Top-1 probability",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.predicted = Counter(
            "serve_predicted_class", "Predictions by top-1 class", ["model", "label"], registry=r
        )
        self.batch_size = Histogram(
            "serve_batch_size", "Images per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.ood_score = Histogram(
            "serve_ood_score", "Out-of-distribution score", buckets=OOD_BUCKETS, registry=r
        )
        self.ood_reasons = Counter(
            "serve_ood_images", "Images out of a training range, by check", ["reason"], registry=r
        )
        self.ood_refused = Counter(
            "serve_ood_refused", "Requests refused as out of distribution", registry=r
        )
        self._predicted: dict = {}  # (model, label) -> its serve_predicted_class child
        self._request_children: dict = {}  # (route, method, status) -> (counter, histogram)
        self.drift_window = drift_window
        self.drifts: dict[str, DriftWindow] = {}  # served model name -> its window
        r.register(DriftCollector(self.drifts))
        self.reloads = Counter("serve_model_reloads", "Bundles swapped in", registry=r)
        self.load_failures = Counter(
            "serve_model_load_failures",
            "Candidate bundles refused, the old model kept serving",
            ["reason"],  # pointer | missing | sha256 | load | self_check (reload.py)
            registry=r,
        )
        self.load_seconds = Gauge(
            "serve_model_load_seconds",
            "Load, warm-up and self-check of the served bundle",
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    def exposition(self) -> bytes:
        """The text GET /metrics answers: this process's registry, or with --workers N > 1
        every worker's metrics added up (the module docstring)."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(DriftCollector(self.drifts))
        return generate_latest(registry)

    def swap_model(self, old, new) -> None:
        """serve_model_info: `new` (a bundle) is served, `old` (a bundle or None) no longer
        is; in multiprocess mode old's series stays, at 0 (its files cannot drop it)."""
        self.model.labels(new.name, new.version).set(1)
        if old is None or (old.name, old.version) == (new.name, new.version):
            return
        self.model.labels(old.name, old.version).set(0)
        if not os.environ.get(MULTIPROCESS_DIR):
            self.model.remove(old.name, old.version)

    def drift(self, model: str) -> DriftWindow:
        """The drift window of the served model `model` (made on its first use)."""
        if (window := self.drifts.get(model)) is None:
            window = self.drifts[model] = DriftWindow(self.drift_window)
        return window

    def observe_predictions(self, probs: np.ndarray, bundle) -> None:
        """Count the top-1 class and its confidence for each row of probs [N, K] from
        `bundle` (served as bundle.served_as), and add them to its drift window."""
        classes, scores = probs.argmax(axis=1).tolist(), probs.max(axis=1).tolist()
        model = bundle.served_as or bundle.name
        children = self._predicted  # labels() takes a lock and builds a key: once per label
        for cls, score in zip(classes, scores, strict=True):
            self.confidence.observe(score)
            key = (model, bundle.labels[cls])
            if (child := children.get(key)) is None:
                child = children[key] = self.predicted.labels(*key)
            child.inc()
        self.drift(model).observe_top(bundle, classes, scores)

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """serve_requests_total and serve_request_seconds for one answer (the hot path's:
        its series are looked up once)."""
        key = (route, method, status)
        if (pair := self._request_children.get(key)) is None:
            pair = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_ood(self, results: list[dict]) -> None:
        """Count each image's OOD score (deployment/server/ood.py) and its reasons."""
        for result in results:
            self.ood_score.observe(result["score"])
            for reason in result["reasons"]:
                self.ood_reasons.labels(reason["check"]).inc()
