"""Static PNGs (matplotlib, Agg): training curves and the failure-case grid."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def failures_png(images: np.ndarray, captions: list[str], title: str) -> bytes:
    """A grid of images with one caption each (true, predicted, confidence)."""
    n = max(len(images), 1)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    # more axes than images: the spare ones stay blank
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(
            image.squeeze(),
            cmap="gray" if image.shape[-1] == 1 else None,
            interpolation="nearest",
            vmin=0,
            vmax=255,
        )
        ax.set_title(caption, fontsize=8)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    return _png(fig)
