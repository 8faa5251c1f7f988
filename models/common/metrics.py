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


def summary(
    y: np.ndarray, probs: np.ndarray, names: list[str], label_mode: str, threshold: float = 0.5
) -> dict:
    """Return overall and per-class metrics.

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
    from sklearn import metrics as skm

    pred = predict(probs, label_mode, threshold)
    if label_mode == "single":
        truth, guess = y.argmax(axis=1), pred.argmax(axis=1)
        labels = list(range(len(names)))
        p, r, f, support = skm.precision_recall_fscore_support(
            truth, guess, labels=labels, zero_division=0
        )
        accuracy = skm.accuracy_score(truth, guess)
    else:
        p, r, f, support = skm.precision_recall_fscore_support(y, pred, zero_division=0)
        accuracy = skm.accuracy_score(y, pred)  # subset accuracy: every class right
    per_class = [
        {
            "class": n,
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, n in enumerate(names)
    ]
    scores = {
        "accuracy": float(accuracy),
        "f1_macro": float(f.mean()),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
    }
    if label_mode == "multi":
        scores |= _multi_extras(y, probs, pred, per_class)
    return scores | {"per_class": per_class}


def _multi_extras(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, per_class: list[dict]
) -> dict:
    """Micro F1, per-class AP and a per-class confusion summary (tp, fp, fn, tn)."""
    from sklearn import metrics as skm

    aps = []
    for i, row in enumerate(per_class):
        truth, guess = y[:, i].astype(bool), pred[:, i].astype(bool)
        ap = skm.average_precision_score(truth, probs[:, i]) if truth.any() else 0.0
        aps.append(float(ap))
        row |= {
            "ap": float(ap),
            "tp": int((truth & guess).sum()),
            "fp": int((~truth & guess).sum()),
            "fn": int((truth & ~guess).sum()),
            "tn": int((~truth & ~guess).sum()),
        }
    return {
        "f1_micro": float(skm.f1_score(y, pred, average="micro", zero_division=0)),
        "map": float(np.mean(aps)),
    }


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


def confident_mistakes(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to n wrong images, most confident first (largest |p - y| on a wrong
    class)."""
    wrong = np.flatnonzero((pred != y).any(axis=1))
    error = np.abs(probs - y)[wrong].max(axis=1)
    return wrong[np.argsort(-error, kind="stable")][:n]


def caption(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, names: list[str]) -> str:
    """ "true A\npred B (0.97)" for one image; sets joined with '+' for multi-label."""
    truth = "+".join(names[k] for k in np.flatnonzero(y)) or "(none)"
    guess = "+".join(names[k] for k in np.flatnonzero(pred)) or "(none)"
    confidence = probs[pred.astype(bool)].max() if pred.any() else 1 - probs.max()
    return f"true {truth}\npred {guess} ({confidence:.2f})"
