"""Classification metrics on predicted probabilities (scikit-learn), and confident mistakes."""

import numpy as np


def classify(probs: np.ndarray, label_mode: str, threshold: float = 0.5) -> np.ndarray:
    """Return predicted class indices [N] (single) or a 0/1 matrix [N, K] (multi)."""
    return probs.argmax(axis=1) if label_mode == "single" else (probs >= threshold).astype(int)


def summary(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict:
    """Return overall and per-class metrics for single-label predictions.

    Args:
        y_true, y_pred: class indices [N].
        names: class names, output index order.

    Returns:
        {"accuracy", "f1_macro", "precision_macro", "recall_macro", "per_class": [...]}
    """
    from sklearn import metrics as skm

    labels = list(range(len(names)))
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(f.mean()),
        "precision_macro": float(p.mean()),
        "recall_macro": float(r.mean()),
        "per_class": [
            {
                "class": n,
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, n in enumerate(names)
        ],
    }


def confident_mistakes(probs: np.ndarray, y_true: np.ndarray, n: int) -> np.ndarray:
    """Return indices of up to n wrong predictions, most confident first."""
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = probs[wrong, y_pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:n]
