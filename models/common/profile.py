"""Runtime profile: inference milliseconds per image through the predictor (serving.py)."""

import time

import numpy as np


def ms_per_image(predict, batch: np.ndarray, repeats: int) -> float:
    """Median wall time of predict(batch) over `repeats` calls after one warm-up, per image."""
    predict(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(predict(batch))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0 / len(batch)


def tile_to(images: np.ndarray, n: int) -> np.ndarray:
    """Repeat images along the batch axis until there are exactly n."""
    reps = -(-n // len(images))
    return np.concatenate([images] * reps)[:n]
