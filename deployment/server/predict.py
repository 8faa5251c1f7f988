"""The one inference sequence, for v2 infer, v1 predict, /predict and /explain:

    read the images (decode encoded files within the budget, or take a pixels tensor)
    -> the model threads (batcher.py: the bundle's predictor, with its calibration)
    -> the out-of-distribution screen (ood.py; 422 over --ood-threshold)
    -> the prediction metrics (telemetry.py)

Encoded files go through the bundle's own `Predictor.prepare` (its copy of
data_processing.images.shrink: JPEG draft decoding, EXIF, mode, resize), so a served file
reaches the model as the pixels training saw. Decoding runs in a worker thread, at most
`slots` images at once across requests, one at a time per request, after the request's
image count, pixels and model input passed the budget (budget.py), all read from the image
headers before a pixel is decoded.

`reprovision predict FILE...` runs the same bundle predictor on files, without a server:
one line per file, its decided label(s) and the top scores; files stream in chunks of 64.

Run: reprovision predict datasets/raw/digits/test/digit_0004.png [--model digits] [--json]
"""

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from deployment.server.budget import Budget
from deployment.server.errors import ApiError, out_of_memory


@dataclass
class Inputs:
    """A request's images as sent: encoded files, or uint8 [H, W, C] arrays of a tensor."""

    encoded: list[bytes] | None = None
    arrays: list[np.ndarray] | None = None


@dataclass
class Prediction:
    scores: np.ndarray  # float32 [N, K]: the bundle's served scores
    images: list[np.ndarray]  # uint8 [h, w, C]: what the model was given
    ood: list[dict] | None  # each image's {"score", "reasons"}; None without input_stats
    headers: list = field(default_factory=list)  # (width, height, mode) per encoded file


async def predict(state, bundle, inputs: Inputs) -> Prediction:
    """Run the sequence for one request's `inputs` on its pinned `bundle`; state is
    lifecycle.State (its budget, batcher, metrics and OOD threshold)."""
    headers: list = []
    if inputs.encoded is not None:
        images = await run_in_threadpool(
            decode_images, inputs.encoded, bundle, state.budget, headers
        )
    else:
        images = inputs.arrays
    scores = await state.batcher.predict(bundle.predictor, images)
    ood = state.screen(bundle, images, scores, headers)
    state.metrics.observe_predictions(scores, bundle)
    return Prediction(scores, images, ood, headers)


def decode_images(
    items: list[bytes], bundle, budget: Budget, headers: list | None = None
) -> list[np.ndarray]:
    """Decode a request's encoded images to uint8 [h, w, C] for `bundle`; when `headers` is
    given, append each image's (width, height, mode) from its header to it (the OOD score's).

    Raises:
        ApiError: 413 over the budget (images, pixels as sent, model input: all before any
            pixel is decoded); 400 for bytes that are not a complete image or cannot be
            converted (any decoder error is the client's bytes, never a 500); 503 when the
            server runs out of memory.
    """
    budget.model_input(len(items), None, bundle)  # the count first: no header is read yet
    opened = [_header(data) for data in items]
    budget.sent_pixels([im.size for im in opened])
    if headers is not None:
        headers.extend((*im.size, im.mode) for im in opened)
    arrays = []
    for n, im in enumerate(opened):
        opened[n] = None  # each decoded image is let go before the next is decoded
        with budget.slot():
            arrays.append(_decode(im, bundle))
    return arrays


def _header(data: bytes) -> PILImage.Image:
    """The image with only its header read (400 when it is not an image)."""
    if not data:
        raise ApiError(400, "empty image")
    try:
        return PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as err:  # over 2x PIL.Image.MAX_IMAGE_PIXELS
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not a decodable image (PNG, JPEG, BMP, GIF, ...)") from None
    except MemoryError:
        raise out_of_memory() from None
    except Exception as err:  # PIL plugins raise what they like on crafted bytes
        raise ApiError(400, f"corrupt image: {type(err).__name__}: {err}") from None


def _decode(im: PILImage.Image, bundle) -> np.ndarray:
    """The bundle's prepare: it decodes (JPEG draft first), so no full-size load comes
    before it."""
    try:
        return bundle.predictor.prepare(im)
    except MemoryError:
        raise out_of_memory() from None
    except PILImage.DecompressionBombError as err:
        raise ApiError(413, f"image over the pixel limit: {err}") from None
    except (OSError, SyntaxError) as err:  # a truncated file raises OSError on load
        raise ApiError(400, f"truncated or corrupt image: {err}") from None
    except Exception as err:  # crafted bytes, or a mode the bundle cannot convert
        raise ApiError(400, f"cannot decode the {im.mode} image: {err}") from None


def decide_labels(probs: np.ndarray, bundle) -> list[str]:
    """The classes the bundle predicts for one image's scores [1, K]: at its per-class
    cut-offs (calibration.json, the bundle's `decide`)."""
    return [bundle.labels[int(k)] for k in np.flatnonzero(bundle.predictor.decide(probs)[0])]


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[float, int, str]]]:
    """For each row of probs [N, K]: the k best (score, index, label), best first."""
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [(float(row[j]), int(j), labels[j]) for j in idx]
        for row, idx in zip(probs, order, strict=True)
    ]


CHUNK = 64  # files per model call: memory stays flat however many are named


def _bundle_path(args) -> Path:
    """--bundle, or the production bundle of --model (a dataset), or the only one there is."""
    if args.bundle:
        return args.bundle
    from deployment.server import pointer  # only the command reads pointers

    found = {p.parent.name: p for p in pointer.every(args.deployment)}
    if args.model and args.model not in found:
        sys.exit(f"predict: --model {args.model}: no {pointer.of(args.model, args.deployment)}")
    if not args.model and len(found) != 1:
        names = ", ".join(found) or f"none under {args.deployment} (run `reprovision run`)"
        sys.exit(f"predict: name a model with --model (production models: {names})")
    return pointer.read(found[args.model or next(iter(found))]).bundle


def _line(path: str, scores: np.ndarray, bundle, k: int, as_json: bool) -> str:
    best = top_k(scores, bundle.labels, k)[0]
    labels = decide_labels(scores, bundle)
    if as_json:
        top = [{"label": label, "score": round(score, 6)} for score, _, label in best]
        return json.dumps({"file": path, "labels": labels, "top": top})
    rest = "  ".join(f"{label} {score:.4f}" for score, _, label in best)
    return f"{path}\t{','.join(labels) or '-'}\t{rest}"


def _parser() -> argparse.ArgumentParser:
    what = "Label image files with a dataset's production model (or --bundle), no server."
    parser = argparse.ArgumentParser(prog="reprovision predict", description=what)
    parser.add_argument("files", nargs="+", type=Path, help="image files (any size or mode)")
    parser.add_argument("--model", help="the dataset whose production model labels them")
    parser.add_argument("--bundle", type=Path, help="an export bundle instead of production")
    parser.add_argument(
        "--deployment",
        type=Path,
        default=Path("deployment"),
        help="where the production pointers are (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "onnx", "tf"),
        default="auto",
        help="onnx never imports TensorFlow (default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="scores shown (default: 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(argv: list[str] | None = None) -> None:
    from deployment.server.bundle import load_bundle

    args = _parser().parse_args(argv)
    bundle = load_bundle(_bundle_path(args), backend=args.backend)
    failed = 0
    for start in range(0, len(args.files), CHUNK):
        names, images = [], []
        for path in args.files[start : start + CHUNK]:
            try:
                images.append(bundle.predictor.prepare(path))
                names.append(str(path))
            except (OSError, UnidentifiedImageError, ValueError) as err:
                failed += 1
                print(f"predict: {path}: not an image this model reads: {err}", file=sys.stderr)
        scores = bundle.predictor.predict_images(images) if images else []
        for name, row in zip(names, scores, strict=True):
            print(_line(name, row[None], bundle, args.top_k, args.json), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
