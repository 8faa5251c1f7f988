"""Hot reload's candidate: load the bundle the production pointer names, and check it.

`load_candidate` loads it (load_bundle refuses a model.keras whose sha256 is not the
pointer's), warms it up and self-checks it: probabilities finite, in [0, 1], one per label,
summing to 1 for a single-label bundle; and a few of the pointer's eval samples (raw test
files with the probabilities evaluate recorded) must predict what evaluation recorded, to
EVAL_ATOL. Any failure raises CandidateError; its `reason` labels
serve_model_load_failures_total. `PointerWatcher` calls back when the pointer's bytes change.
"""

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deployment.server import pointer
from deployment.server.bundle import Bundle, load_bundle
from deployment.server.pointer import Pointer

EVAL_ATOL = 1e-4  # evaluate.py rounds to 1e-7; batch composition moves float32 by ~1e-6
EVAL_SAMPLES = 4  # eval images re-predicted per candidate


class CandidateError(Exception):
    """A candidate bundle that must not be served; reason is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # pointer | missing | sha256 | load | self_check


def read_pointer(path: Path) -> Pointer:
    """The pointer at `path` (pointer.read), as a candidate.

    Raises:
        CandidateError: reason "pointer" when it is missing or not a pointer.
    """
    try:
        found = pointer.read(path)
    except pointer.PointerError as err:
        raise CandidateError("pointer", str(err)) from None
    if found is None:
        raise CandidateError("pointer", f"{path}: no production pointer")
    return found


def check_probabilities(probs: np.ndarray, n_labels: int, multi_label: bool = False) -> None:
    """Raise CandidateError unless probs is [N, n_labels], finite, in [0, 1] and (single
    label, softmax) each row sums to 1."""
    if probs.ndim != 2 or probs.shape[1] != n_labels:
        raise CandidateError("self_check", f"output shape {probs.shape}, want [N, {n_labels}]")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise CandidateError("self_check", "probabilities not finite or outside [0, 1]")
    if not multi_label and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise CandidateError("self_check", f"probabilities sum to {probs.sum(axis=1)}, not 1")


def _multi_label(bundle: Bundle) -> bool:
    """Whether the bundle's params.json says label_mode "multi" (sigmoid outputs)."""
    params = bundle.path / "params.json"
    spec = json.loads(params.read_text()).get("spec", {}) if params.is_file() else {}
    return spec.get("label_mode") == "multi"


def _eval_images(pointer: Pointer, labels: list[str]) -> list[tuple[bytes, list[float]]]:
    """Up to EVAL_SAMPLES (raw file bytes, recorded probabilities) from eval/samples.json."""
    if pointer.eval_samples is None or not pointer.eval_samples.is_file():
        return []
    recorded = json.loads(pointer.eval_samples.read_text())
    if recorded.get("categories") != labels:
        raise CandidateError("self_check", f"eval categories {recorded.get('categories')}")
    return [
        (base64.b64decode(image["data"]), image["probs"])
        for image in recorded["images"][:EVAL_SAMPLES]
    ]


def self_check(bundle: Bundle, pointer: Pointer | None) -> str:
    """Warm up and check `bundle` (see the module docstring); return what was checked.

    Raises:
        CandidateError: reason "self_check".
    """
    multi = _multi_label(bundle)
    check_probabilities(bundle.warm_up(), len(bundle.labels), multi)
    samples = _eval_images(pointer, bundle.labels) if pointer else []
    if not samples:
        return "warm-up output only (no eval samples to compare)"
    predictor = bundle.predictor
    probs = predictor.predict_images([predictor.prepare(data) for data, _ in samples])
    check_probabilities(probs, len(bundle.labels), multi)
    error = float(np.abs(probs - np.array([p for _, p in samples])).max())
    if error > EVAL_ATOL:
        raise CandidateError("self_check", f"differs from its eval predictions by {error:.2e}")
    return f"{len(samples)} eval images match to {error:.1e}"


def load_candidate(
    pointer: Pointer,
    intra_op: int | None = None,
    inter_op: int | None = None,
    backend: str = "auto",
) -> tuple[Bundle, str]:
    """Load, warm up and self-check the bundle `pointer` names with `backend` (load_bundle's:
    auto, onnx or tf).

    Returns:
        (the bundle, a line saying what the self-check compared).

    Raises:
        CandidateError: reason missing, sha256, load or self_check.
    """
    try:
        bundle = load_bundle(
            pointer.bundle, intra_op, inter_op, sha256=pointer.sha256, backend=backend
        )
    except FileNotFoundError as err:
        raise CandidateError("missing", str(err)) from None
    except ValueError as err:
        raise CandidateError("sha256", str(err)) from None
    except Exception as err:
        raise CandidateError("load", f"{pointer.bundle}: {err!r}") from None
    try:
        return bundle, self_check(bundle, pointer)
    except CandidateError:
        raise
    except Exception as err:  # an unreadable eval image or predictions file, ...
        raise CandidateError("self_check", f"{pointer.bundle}: {err!r}") from None


class PointerWatcher:
    """Call `on_change()` from a daemon thread whenever the pointer file's bytes change."""

    def __init__(self, path: Path, interval: float, on_change: Callable[[], None]) -> None:
        self.path, self.interval, self.on_change = Path(path), interval, on_change
        self._stop = threading.Event()
        self._last = self._digest()
        self._thread = threading.Thread(target=self._run, name="watch-pointer", daemon=True)

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:  # missing for a moment (a non-atomic writer): keep the model
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            digest = self._digest()
            if digest is not None and digest != self._last:
                self._last = digest
                self.on_change()  # a load takes seconds; changes meanwhile are seen next

    def start(self) -> "PointerWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; also before `start` (a server whose port was taken shuts down
        before its load thread started the watcher)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
