"""What a bundle applies after its model: temperature scaling and per-class cut-offs.

models/evaluate.py fits both on the validation split (models/common/calibrate.py) and writes
models/runs/<cell>/eval/calibration.json; models/export.py copies it into the bundle, and the
bundle's predictor (serving.py) serves `Postprocess.scores` of the model's probabilities and
decides labels with `Postprocess.decide`. A bundle without calibration.json serves the
model's probabilities unchanged and decides at 0.5 (multi-label) or by argmax.

calibration.json (the fields read here; the rest is the fit's report):
    {"label_mode": "single" | "multi",
     "temperature": T,                  1.0: the model's probabilities, unchanged
     "thresholds": null | {"target": ..., "classes": [{"index": k, "threshold": t, ...}]}}

Temperature (Guo et al. 2017): single-label softmax(log p / T), which is softmax(logits / T)
as log p = logits - logsumexp(logits); multi-label sigmoid(logit(p) / T). T > 1 softens,
T < 1 sharpens; neither changes a single-label argmax or which side of 0.5 a multi-label
score is on. Cut-offs: multi-label, class k is present when its score >= its threshold;
binary single-label, the class with a threshold (the second, "positive" one) is predicted
when its score >= the threshold, the other one otherwise. Numpy and json only: the ONNX
path never imports TensorFlow.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "calibration.json"
DEFAULT_THRESHOLD = 0.5  # multi-label, a class without a threshold of its own
EPS = 1e-7  # multi-label probabilities are clipped to [EPS, 1 - EPS] before the logit


def logits(probs: np.ndarray, label_mode: str) -> np.ndarray:
    """float64 log-probabilities (single-label) or logits (multi-label) of probabilities."""
    p = np.asarray(probs, np.float64)
    if label_mode == "single":
        return np.log(np.maximum(p, np.finfo(np.float64).tiny))
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def from_logits(z: np.ndarray, label_mode: str) -> np.ndarray:
    """float64 softmax over the last axis (single-label) or elementwise sigmoid (multi)."""
    if label_mode == "single":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow


def scale(probs: np.ndarray, temperature: float, label_mode: str) -> np.ndarray:
    """float64 probabilities with temperature `temperature` applied."""
    return from_logits(logits(probs, label_mode) / temperature, label_mode)


@dataclass(frozen=True)
class Postprocess:
    label_mode: str = "single"
    temperature: float = 1.0
    thresholds: dict[int, float] | None = None  # class index -> cut-off

    @classmethod
    def load(cls, bundle_dir: Path | str) -> "Postprocess | None":
        """The bundle's calibration.json, or None when it has none (an older bundle)."""
        path = Path(bundle_dir) / FILE
        if not path.is_file():
            return None
        return cls.from_record(json.loads(path.read_text()), path)

    @classmethod
    def from_record(cls, record: dict, path: Path | str = FILE) -> "Postprocess":
        """Check and read a calibration.json record (ValueError naming the field)."""
        mode, t = record.get("label_mode"), record.get("temperature")
        if mode not in ("single", "multi"):
            raise ValueError(f'{path}: "label_mode" must be "single" or "multi", not {mode!r}')
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ValueError(f'{path}: "temperature" must be a positive number, not {t!r}')
        classes = (record.get("thresholds") or {}).get("classes")
        thresholds = None
        if classes is not None:
            try:
                thresholds = {int(c["index"]): float(c["threshold"]) for c in classes}
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f'{path}: "thresholds.classes" must be a list of {{"index", "threshold"}}'
                ) from None
        return cls(mode, float(t), thresholds)

    def scores(self, probs: np.ndarray) -> np.ndarray:
        """The served float32 [N, K] scores for the model's probabilities [N, K]."""
        if self.temperature == 1.0:
            return probs
        return scale(probs, self.temperature, self.label_mode).astype(np.float32)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """bool [N, K]: the labels predicted from served scores [N, K]."""
        return decide(scores, self.label_mode, self.thresholds)


def decide(scores: np.ndarray, label_mode: str, thresholds: dict[int, float] | None = None):
    """bool [N, K] predicted labels: multi-label, score >= the class's threshold (0.5 without
    one); single-label, the argmax, or for a binary model with a threshold on class k, k when
    its score >= the threshold and the other class otherwise."""
    scores = np.asarray(scores)
    n, k = scores.shape
    thresholds = thresholds or {}
    if label_mode == "multi":
        cut = np.full(k, DEFAULT_THRESHOLD)
        for c, t in thresholds.items():
            cut[c] = t
        return scores >= cut
    top = scores.argmax(axis=1)
    if k == 2 and thresholds:
        (c, t), *_ = thresholds.items()
        top = np.where(scores[:, c] >= t, c, 1 - c)
    return np.eye(k, dtype=bool)[top]
