"""Fit what the bundle applies after its model (common/postprocess.py) on the validation split.

models/evaluate.py calls `fit_on_validation`: the validation split is the one training held
out (data.split_train_val with train.val_fraction and base.seed: the same images), streamed
through the model in batches; at most `max_images` of them are kept, as float64 logits
[n, K] (memory: max_images x K x 8 bytes, whatever the split's size).

- Temperature (Guo et al. 2017): one scalar T minimizing the validation negative
  log-likelihood of softmax(log p / T) (multi-label: the mean binary cross-entropy of
  sigmoid(logit p / T) over every image and class). The NLL is convex in 1 / T (the logits
  are linear in it), so a bounded Brent search over 1 / T in [1 / T_MAX, 1 / T_MIN] finds
  the global minimum.
- Cut-offs, binary and multi-label: each class's threshold on the calibrated validation
  scores (binary single-label: the second class's), for one target:
  max_f1; min_precision (the lowest cut-off whose precision reaches `threshold_level`,
  which keeps the most recall); min_recall (the highest whose recall still reaches it).
  A cut-off is always one of the validation scores, predicting score >= cut-off.
"""

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from data_processing.core.params import Params
from models.common.calibration import Calibration
from models.common.data import split_train_val
from models.common.postprocess import DEFAULT_THRESHOLD, Postprocess, from_logits, logits

T_MIN, T_MAX = 0.05, 20.0
TARGETS = ("max_f1", "min_precision", "min_recall")


class CalibrateParams(Params):
    temperature: bool = False  # fit T on the validation split; the bundle serves scaled scores
    threshold: Literal["none", "max_f1", "min_precision", "min_recall"] = "none"
    threshold_level: Annotated[float, Field(gt=0, le=1)] = 0.9  # min_precision / min_recall
    max_images: Annotated[int, Field(ge=0)] = 50_000  # validation images kept (first in order)


def nll(z: np.ndarray, y: np.ndarray, label_mode: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of logits z [n, K] / temperature for multi-hot y [n, K]."""
    z = np.asarray(z, np.float64) / temperature
    y = np.asarray(y, bool)
    if label_mode == "single":
        top = z.max(axis=1, keepdims=True)
        log_norm = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
        return float(np.mean(log_norm - z[np.arange(len(z)), y.argmax(axis=1)]))
    # binary cross-entropy of sigmoid(z): softplus(z) - y z, computed stably
    softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    return float(np.mean(softplus - y * z))


def fit_temperature(z: np.ndarray, y: np.ndarray, label_mode: str) -> float:
    """The T in [T_MIN, T_MAX] minimizing `nll(z, y, label_mode, T)` (1.0 without images)."""
    from scipy.optimize import minimize_scalar

    if not len(z):
        return 1.0
    result = minimize_scalar(
        lambda beta: nll(z * beta, y, label_mode),
        bounds=(1 / T_MAX, 1 / T_MIN),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(1 / result.x)


def _cuts(scores: np.ndarray, truth: np.ndarray):
    """(cut-offs, tp, fp) at every distinct score, highest first: predicting score >= cut."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp, fp = np.cumsum(t), np.cumsum(~t)
    last = np.r_[s[1:] != s[:-1], True]  # the last of each run of equal scores
    return s[last], tp[last], fp[last]


def pick_threshold(scores: np.ndarray, truth: np.ndarray, target: str, level: float) -> dict:
    """One class's cut-off on its validation scores [n] and truth (bool [n]).

    Returns:
        {"threshold", "reached"} and the validation precision, recall and F1 at it. A class
        without positive images keeps DEFAULT_THRESHOLD (reached false); a min_precision
        level no cut-off reaches gives the cut-off of the best precision (reached false).
    """
    if target not in TARGETS:
        raise ValueError(f"threshold target must be one of {list(TARGETS)}, not {target!r}")
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth, bool)
    positives = int(truth.sum())
    if not positives:
        return {"threshold": DEFAULT_THRESHOLD, "reached": False} | _rates(0, 0, 0)
    cut, tp, fp = _cuts(scores, truth)
    precision, recall = tp / (tp + fp), tp / positives
    reached = True
    if target == "max_f1":
        i = int(np.argmax(2 * tp / (tp + fp + positives)))  # the highest cut of the best F1
    elif target == "min_recall":
        i = int(np.flatnonzero(recall >= level - 1e-12)[0])
    else:
        ok = np.flatnonzero(precision >= level - 1e-12)
        reached = bool(len(ok))
        i = int(ok[-1]) if reached else int(np.argmax(precision))
    return {"threshold": float(cut[i]), "reached": reached} | _rates(tp[i], fp[i], positives)


def _rates(tp: int, fp: int, positives: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (tp + fp + positives) if tp + fp + positives else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def threshold_classes(label_mode: str, k: int) -> list[int]:
    """The classes that get a cut-off: every class (multi-label), the second (binary), none."""
    if label_mode == "multi":
        return list(range(k))
    return [1] if k == 2 else []


def pick_thresholds(scores, y, label_mode: str, names: list[str], target: str, level: float):
    """{"target", "level", "classes": [{"class", "index", "threshold", "reached", "val":
    {precision, recall, f1}}]} on calibrated validation scores [n, K], or None when the
    dataset has no class to cut (single-label with 3+ classes) or the target is "none"."""
    chosen = threshold_classes(label_mode, len(names))
    if target == "none" or not chosen:
        return None
    rows = []
    for c in chosen:
        picked = pick_threshold(scores[:, c], np.asarray(y)[:, c], target, level)
        rate = {k: picked.pop(k) for k in ("precision", "recall", "f1")}
        rows.append({"class": names[c], "index": c, **picked, "val": rate})
    return {"target": target, "level": None if target == "max_f1" else level, "classes": rows}


def val_logits(predict, shards, keep: np.ndarray, batch: int, label_mode: str):
    """(logits [n, K] float64, multi-hot y [n, K]) of the kept train records, streamed."""
    zs, ys = [], []
    labels = shards.labels("train")
    for index, images, _ in shards.dataset("train", batch, keep, with_index=True):
        zs.append(logits(predict(images.numpy()), label_mode))
        ys.append(np.asarray(labels[index.numpy()]))
    k = len(shards.categories)
    return (np.concatenate(zs), np.concatenate(ys)) if zs else (np.zeros((0, k)),) * 2


def limit(val: np.ndarray, max_images: int) -> np.ndarray:
    """The validation mask with only its first max_images records kept."""
    kept = np.flatnonzero(val)[:max_images]
    mask = np.zeros_like(val, dtype=bool)
    mask[kept] = True
    return mask


def _ece(z: np.ndarray, y: np.ndarray, label_mode: str, temperature: float) -> float:
    cal = Calibration(label_mode)
    cal.update(y, from_logits(z / temperature, label_mode))
    return cal.ece()


def fit(z: np.ndarray, y: np.ndarray, label_mode: str, names: list[str], params) -> dict:
    """The calibration.json record for validation logits z [n, K] and multi-hot y: the
    temperature (1.0 when params.temperature is off), its validation NLL and ECE before and
    after, and the cut-offs on the scaled scores."""
    t = round(fit_temperature(z, y, label_mode), 6) if params.temperature else 1.0
    scores = from_logits(z / t, label_mode)
    thresholds = pick_thresholds(
        scores, y, label_mode, names, params.threshold, params.threshold_level
    )
    val = {"images": len(z)}
    for name, temp in (("before", 1.0), ("after", t)):
        val[f"nll_{name}"] = round(nll(z, y, label_mode, temp), 6) if len(z) else None
        val[f"ece_{name}"] = round(_ece(z, y, label_mode, temp), 6)
    return {
        "label_mode": label_mode,
        "temperature": t,
        "fitted": bool(params.temperature and len(z)),
        "val": val,
        "thresholds": thresholds,
    }


def fit_on_validation(predict, shards, params, val_fraction: float, seed: int, batch: int):
    """`fit` on the validation split training held out (the same images: split_train_val with
    the same fraction and seed), its first params.max_images records streamed through
    `predict` (the model's probabilities for uint8 batches)."""
    keep = limit(split_train_val(shards, val_fraction, seed), params.max_images)
    z, y = val_logits(predict, shards, keep, batch, shards.label_mode)
    return fit(z, y, shards.label_mode, shards.categories, params)


class Served:
    """The test split as served: `update` turns the model's probabilities into the served
    scores and counts ECE before and after and each cut-off's test outcomes; `result` is
    the calibration record with its "test" part and per-class test rates added."""

    def __init__(self, record: dict) -> None:
        self.record, self.post = record, Postprocess.from_record(record)
        mode = record["label_mode"]
        self.before, self.after, self.images = Calibration(mode), Calibration(mode), 0
        self.rows = (record.get("thresholds") or {}).get("classes", [])
        self.counts = np.zeros((len(self.rows), 3), np.int64)  # tp, fp, positives

    def update(self, y: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Add a batch (multi-hot y [B, K], the model's probabilities); return served scores."""
        scores = self.post.scores(probs)
        self.images += len(y)
        self.before.update(y, probs)
        self.after.update(y, scores)
        for i, row in enumerate(self.rows):
            truth = np.asarray(y)[:, row["index"]].astype(bool)
            guess = scores[:, row["index"]] >= row["threshold"]
            self.counts[i] += [(truth & guess).sum(), (~truth & guess).sum(), truth.sum()]
        return scores

    def result(self) -> dict:
        rows = [
            {**row, "test": _rates(*map(int, c))}
            for row, c in zip(self.rows, self.counts, strict=True)
        ]
        test = {
            "images": self.images,
            "ece_before": round(self.before.ece(), 6),
            "ece_after": round(self.after.ece(), 6),
        }
        thresholds = self.record["thresholds"] and {**self.record["thresholds"], "classes": rows}
        return {**self.record, "test": test, "thresholds": thresholds}
