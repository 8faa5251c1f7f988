"""Classification metrics (scikit-learn), confusion records and confident mistakes.

Works on multi-hot ground truth `y` [N, K] and probabilities [N, K] for both label modes:
single-label predicts the argmax, multi-label every class at or above a threshold.
"""

import numpy as np


def predict(probs: np.ndarray, label_mode: str, threshold: float = 0.5) -> np.ndarray:
    """Return a 0/1 prediction matrix [N, K]."""
    if label_mode == "single":
        return np.eye(probs.shape[1], dtype=np.uint8)[probs.argmax(axis=1)]
    return (probs >= threshold).astype(np.uint8)


EXACT_AP_LIMIT = 4_000_000  # multi-label: probabilities kept for exact AP (16 MB); beyond it,
AP_BINS = 10_000  # per-class score histograms of this many bins give AP to about 1e-4


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)


COLLAPSED = 0.95  # a model that gives one class to this share of the test images has collapsed


class Scores:
    """Streaming metrics: update() batch by batch, result() at the end; memory is counts.

    Single-label keeps a K x K confusion matrix. Multi-label keeps per-class tp/fp/fn/tn and,
    for average precision, every probability while N x K <= EXACT_AP_LIMIT, else per-class
    histograms of positive and negative scores.
    """

    def __init__(self, names: list[str], label_mode: str, threshold: float = 0.5) -> None:
        self.names, self.label_mode, self.threshold = names, label_mode, threshold
        k = len(names)
        self.matrix = np.zeros((k, k), np.int64)  # single: [true, predicted]
        self.counts = np.zeros((4, k), np.int64)  # multi: tp, fp, fn, tn
        self.images = self.exact = 0
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.hist = np.zeros((2, k, AP_BINS), np.int64)  # multi: [negative, positive]

    def update(self, y: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Add a batch (multi-hot y [B, K], probabilities [B, K]); return its predictions."""
        pred = predict(probs, self.label_mode, self.threshold)
        self.images += len(y)
        if self.label_mode == "single":
            k = len(self.names)
            pairs = y.argmax(axis=1) * k + pred.argmax(axis=1)
            self.matrix += np.bincount(pairs, minlength=k * k).reshape(k, k)
            return pred
        truth, guess = y.astype(bool), pred.astype(bool)
        for row, value in enumerate((truth & guess, ~truth & guess, truth & ~guess)):
            self.counts[row] += value.sum(axis=0)
        self.counts[3] += (~truth & ~guess).sum(axis=0)
        self.exact += int((truth == guess).all(axis=1).sum())
        bins = np.minimum((probs * AP_BINS).astype(np.int64), AP_BINS - 1)
        for c in range(len(self.names)):
            for positive in (0, 1):
                chosen = bins[truth[:, c] == bool(positive), c]
                self.hist[positive, c] += np.bincount(chosen, minlength=AP_BINS)
        if self.images * len(self.names) <= EXACT_AP_LIMIT:
            self.kept.append((np.array(y), np.array(probs)))
        return pred

    def _ap(self, c: int) -> float:
        if self.images * len(self.names) <= EXACT_AP_LIMIT:
            from sklearn import metrics as skm

            y = np.concatenate([k[0][:, c] for k in self.kept]).astype(bool)
            scores = np.concatenate([k[1][:, c] for k in self.kept])
            return float(skm.average_precision_score(y, scores)) if y.any() else 0.0
        neg, pos = self.hist[0, c][::-1], self.hist[1, c][::-1]  # high scores first
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        if not tp[-1]:
            return 0.0
        precision = _ratio(tp, tp + fp)
        return float((precision * pos).sum() / tp[-1])

    def result(self) -> dict:
        """The same dict as `summary`: overall and per-class metrics."""
        if self.label_mode == "single":
            tp = np.diag(self.matrix)
            support, predicted = self.matrix.sum(axis=1), self.matrix.sum(axis=0)
            fp, fn = predicted - tp, support - tp
            accuracy = tp.sum() / max(self.images, 1)
        else:
            tp, fp, fn, _ = self.counts
            support = tp + fn
            accuracy = self.exact / max(self.images, 1)
        p, r, f = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
        per_class = [
            {
                "class": n,
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, n in enumerate(self.names)
        ]
        scores = {
            "accuracy": float(accuracy),
            "f1_macro": float(f.mean()),
            "precision_macro": float(p.mean()),
            "recall_macro": float(r.mean()),
        }
        if self.label_mode == "multi":
            scores |= self._multi_extras(per_class)
        else:
            scores |= self._health(accuracy, support, predicted)
        return scores | {"per_class": per_class}

    def _health(self, accuracy: float, support: np.ndarray, predicted: np.ndarray) -> dict:
        """Signs of a model that learned nothing: predictions collapsed onto one class
        (`collapsed`: one class takes at least COLLAPSED of them), or accuracy not above
        chance (`above_chance`: over the majority-class rate by 2 binomial standard errors
        at that rate, so a few lucky test images do not count)."""
        n = max(self.images, 1)
        majority, top = support.max() / n, predicted.max() / n
        margin = 2 * np.sqrt(majority * (1 - majority) / n)
        return {
            "majority_rate": float(majority),
            "top_prediction_share": float(top),
            "collapsed": bool(len(self.names) > 1 and top >= COLLAPSED),
            "above_chance": bool(accuracy > majority + margin),
        }

    def _multi_extras(self, per_class: list[dict]) -> dict:
        aps = []
        for i, row in enumerate(per_class):
            aps.append(self._ap(i))
            row |= {"ap": aps[-1]} | {
                key: int(self.counts[j, i]) for j, key in enumerate(("tp", "fp", "fn", "tn"))
            }
        tp, fp, fn = (int(v) for v in self.counts[:3].sum(axis=1))
        micro = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return {"f1_micro": float(micro), "map": float(np.mean(aps))}

    def confusion(self) -> list[dict]:
        """Confusion counts {actual, predicted, count} (single: non-zero cells of the matrix;
        multi: tp on the diagonal, fn against "(none)" predicted, fp against "(none)" actual),
        for the confusion_counts plot template."""
        cells = []
        if self.label_mode == "single":
            for t, p in zip(*np.nonzero(self.matrix), strict=True):
                cells.append((self.names[t], self.names[p], int(self.matrix[t, p])))
        else:
            for i, name in enumerate(self.names):
                tp, fp, fn, _ = (int(v) for v in self.counts[:, i])
                cells += [(name, name, tp), (name, "(none)", fn), ("(none)", name, fp)]
        return [{"actual": a, "predicted": p, "count": n} for a, p, n in cells if n]


def summary(
    y: np.ndarray, probs: np.ndarray, names: list[str], label_mode: str, threshold: float = 0.5
) -> dict:
    """Return overall and per-class metrics for in-memory arrays (see `Scores`).

    Args:
        y: multi-hot ground truth [N, K].
        probs: predicted probabilities [N, K].
        names: class names, output index order.
        label_mode: "single" or "multi".
        threshold: multi-label decision threshold.

    Returns:
        accuracy (exact match for multi-label), macro precision/recall/F1, and a
        `per_class` list; multi-label adds micro F1, mean AP and per-class AP and counts.
    """
    scores = Scores(names, label_mode, threshold)
    scores.update(y, probs)
    return scores.result()


def confusion(y: np.ndarray, pred: np.ndarray, names: list[str]) -> list[dict]:
    """Records {actual, predicted} for DVC's confusion template.

    Single-label: one record per image. Multi-label: one per image and class that is true
    or predicted; a missed class pairs with "(none)" predicted, a false one with "(none)"
    actual, so the matrix gains a "(none)" row and column.
    """
    if (y.sum(axis=1) == 1).all() and (pred.sum(axis=1) == 1).all():
        return [
            {"actual": names[t], "predicted": names[p]}
            for t, p in zip(y.argmax(1), pred.argmax(1), strict=True)
        ]
    records = []
    for truth, guess in zip(y, pred, strict=True):
        for k in np.flatnonzero(truth | guess):
            records.append(
                {
                    "actual": names[k] if truth[k] else "(none)",
                    "predicted": names[k] if guess[k] else "(none)",
                }
            )
    return records


def mistakes(y: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the wrong images, their confidence: the largest |p - y| on any class)."""
    wrong = np.flatnonzero((pred != y).any(axis=1))
    return wrong, np.abs(probs[wrong] - y[wrong]).max(axis=1, initial=0.0)


def confident_mistakes(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to n wrong images, most confident first (largest |p - y| on a wrong
    class)."""
    wrong, error = mistakes(y, probs, pred)
    return wrong[np.argsort(-error, kind="stable")][:n]


def caption(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, names: list[str]) -> str:
    """ "true A\npred B (0.97)" for one image; sets joined with '+' for multi-label."""
    truth = "+".join(names[k] for k in np.flatnonzero(y)) or "(none)"
    guess = "+".join(names[k] for k in np.flatnonzero(pred)) or "(none)"
    confidence = probs[pred.astype(bool)].max() if pred.any() else 1 - probs.max()
    return f"true {truth}\npred {guess} ({confidence:.2f})"


def health_warnings(test: dict) -> list[str]:
    """What a cell's test metrics (`Scores.result`) say is wrong with it, in words."""
    warnings = []
    if test.get("collapsed"):
        share = test["top_prediction_share"]
        warnings.append(f"predictions collapsed: one class takes {share:.0%} of the test images")
    if test.get("above_chance") is False:
        warnings.append(
            f"accuracy {test['accuracy']:.3f} is not above chance (the majority class is "
            f"{test['majority_rate']:.3f} of the test images)"
        )
    return warnings
