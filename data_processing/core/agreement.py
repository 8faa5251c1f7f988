"""One definition of "the same model": two runs of a classifier agree when their scores are
within float32's rounding of each other and they name the same top-1 label.

Used by export's ONNX check (models/common/onnx_export.py), the deploy test
(deployment/release/deploy_test.py) and the tests; nothing else compares scores across
backends.

Why these tolerances. float32 keeps 24 bits (unit roundoff 2^-24, about 6e-8). A logit is a
sum of thousands of products through every layer, and another kernel library (onnxruntime's
MLAS against TensorFlow's oneDNN, another SIMD width, another batch tiling) adds them in
another order, so each layer re-rounds differently; standardisation divides by a small
standard deviation and magnifies what is left. Seen here: 1e-7..2e-6 between two TensorFlow
runs, 1e-6..5e-5 between TensorFlow and onnxruntime (5e-5 on 25x25 standardised grayscale
photos, 1.6e-5 on digits on another CPU). So a score may move by RTOL of itself (2^-10: the
last 14 of float32's 24 bits) plus ATOL (for scores near 0, where a relative bound means
nothing): at least 2x the worst difference seen, and 100x under what a real conversion
error gives (a wrong op, swapped channels, a lost normalisation move scores by 1e-2 and
more; tests/test_onnx.py plants them). Top-1 labels must be equal wherever the reference's
two best scores are further apart than the tolerance; a tie within rounding may go either
way and is counted, not failed.
"""

from dataclasses import dataclass

import numpy as np

RTOL = 1e-3  # of the larger score
ATOL = 1e-4  # for scores near 0


@dataclass(frozen=True)
class Agreement:
    """How far `found` is from `expected`, and whether that is the same model."""

    rows: int  # images compared
    max_abs_diff: float  # the largest |found - expected|
    worst: float  # the largest |found - expected| / (ATOL + RTOL * max(|found|, |expected|))
    label_agreement: float  # share of rows with the same top-1 label (ties count as agreeing)
    ties: int  # rows whose top-1 differs within a tie (reference top-2 within tolerance)
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0 and self.label_agreement == 1.0

    def describe(self) -> str:
        """One line for an error or a log: the figures against the tolerance."""
        return (
            f"max abs difference {self.max_abs_diff:.3g} ({self.worst:.2g}x the tolerance "
            f"{self.atol:g} + {self.rtol:g} x score), top-1 agreement "
            f"{self.label_agreement:.4g} over {self.rows} images"
            + (f" ({self.ties} flipped within a tie)" if self.ties else "")
        )

    def record(self) -> dict:
        """The figures as JSON-ready values (lineage.json, deploy_test.json)."""
        return {
            "max_abs_diff": float(f"{self.max_abs_diff:.3g}"),
            "tolerance_used": float(f"{self.worst:.3g}"),
            "label_agreement": self.label_agreement,
        }


def compare(
    expected: np.ndarray, found: np.ndarray, rtol: float = RTOL, atol: float = ATOL
) -> Agreement:
    """Compare scores [N, K] of the same N images (`expected` is the reference).

    Raises:
        ValueError: the shapes differ.
    """
    expected = np.asarray(expected, np.float64)
    found = np.asarray(found, np.float64)
    if expected.shape != found.shape or expected.ndim != 2:
        raise ValueError(f"scores of shape {expected.shape} and {found.shape} do not compare")
    if not expected.size:
        return Agreement(0, 0.0, 0.0, 1.0, 0, rtol, atol)
    diff = np.abs(found - expected)
    allowed = atol + rtol * np.maximum(np.abs(found), np.abs(expected))
    ratio = diff / allowed
    worst = float(np.nan_to_num(ratio, nan=np.inf).max())  # NaN never passes
    top = np.sort(expected, axis=1)[:, ::-1]
    margin = top[:, 0] - top[:, 1] if expected.shape[1] > 1 else np.full(len(expected), np.inf)
    tie = margin <= atol + rtol * top[:, 0]
    same = expected.argmax(axis=1) == found.argmax(axis=1)
    return Agreement(
        rows=len(expected),
        max_abs_diff=float(np.nan_to_num(diff, nan=np.inf).max()),
        worst=worst,
        label_agreement=float((same | tie).mean()),
        ties=int((tie & ~same).sum()),
        rtol=rtol,
        atol=atol,
    )
