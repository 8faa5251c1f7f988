"""Static PNGs (matplotlib, Agg): training curves and the failure-case grid (with heat maps)."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.common.explain import overlay  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def curves_png(history: dict, title: str) -> bytes:
    """Loss and accuracy vs epoch, train and val, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label="train")
        ax.plot(epochs, history[f"val_{metric}"], label="val", linestyle="--")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def failures_png(
    images: np.ndarray,
    captions: list[str],
    title: str,
    heatmaps: np.ndarray | None = None,
) -> bytes:
    """A grid of images with one caption each (true, predicted, confidence); with
    `heatmaps` ([N, H, W], 0..1, common/explain.py) each image has its heat map beside it."""
    n = max(len(images), 1)
    per_image = 1 if heatmaps is None else 2
    cols = min(n, 8 // per_image)
    rows = -(-n // cols)
    size = (1.7 * cols * per_image, 1.9 * rows + 0.4)
    fig, axes = plt.subplots(rows, cols * per_image, figsize=size, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    # more axes than images: the spare ones stay blank
    for k, (image, caption) in enumerate(zip(images, captions, strict=False)):
        ax = axes.flat[k * per_image]
        ax.imshow(
            image.squeeze(),
            cmap="gray" if image.shape[-1] == 1 else None,
            interpolation="nearest",
            vmin=0,
            vmax=255,
        )
        ax.set_title(caption, fontsize=8)
        if heatmaps is not None:
            axes.flat[k * per_image + 1].imshow(
                overlay(image, heatmaps[k]), interpolation="nearest"
            )
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    return _png(fig)
