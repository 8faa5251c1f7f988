"""Label audit: train images that may be mislabelled, found by confident learning (cleanlab).

Part of the validate stage: once a dataset has no errors, `audit` shrinks the train images to
`image_size` pixels (grayscale by default), fits a cheap model (params `label_audit.model`:
logistic regression, or a log-loss SGD classifier for scale) in stratified k-fold cross
validation, and hands the out-of-fold probabilities to `cleanlab.filter.find_label_issues`
(multi-label datasets: `cleanlab.multilabel_classification.filter.find_label_issues`). Each
suspect is ranked by its label quality score (`rank_by`: lowest first) and gets a suggested
label (the model's most probable class). The validate stage writes them into the report
folder: label_audit.json (the ranked list), label_audit.png (the top `max_listed` as
thumbnails), a summary in validate.json and a warning with the count: not an error. A model
that barely beats chance (Cohen's kappa below `min_kappa`) lists nothing: the warning says
the audit is inconclusive, since what such a model doubts is mostly its own mistakes.

Memory: a uint8 row of h x w x channels per audited image (256 bytes at 16x16 gray), at most
`max_images` of them: larger train splits are audited on a stratified sample, and the report
says so. Images are shrunk by `images.load` (JPEGs draft-decoded near the size), in worker
processes from MIN_PARALLEL images on, with a progress bar on stderr.
"""

import contextlib
import multiprocessing
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from data_processing import schema
from data_processing.core import progress
from data_processing.core.params import Params
from data_processing.images import load

MIN_PARALLEL = 1000  # fewer images decode in this process: starting workers would cost more
CHUNK = 64  # images per pool task
FilterBy = Literal[  # cleanlab.filter.find_label_issues filter_by
    "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
    "predicted_neq_given", "low_normalized_margin", "low_self_confidence",
]  # fmt: skip
RankBy = Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]


class LabelAuditParams(Params):
    model: Literal["logistic", "sgd", "none"] = "logistic"  # none: no audit
    folds: int = Field(5, ge=2)  # k of the stratified k-fold out-of-fold probabilities
    image_size: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        [16, 16], min_length=2, max_length=2
    )
    channels: Literal[1, 3] = 1  # 1: grayscale pixels; 3: RGB (3x the memory)
    max_images: int = Field(20_000, ge=2)  # larger train splits: a stratified sample this size
    max_listed: int = Field(32, ge=0)  # suspects drawn in label_audit.png and listed in the report
    filter_by: FilterBy = "prune_by_noise_rate"  # cleanlab's rule for what counts as an issue
    rank_by: RankBy = "self_confidence"  # cleanlab's label quality score: suspects lowest first
    # Below this Cohen's kappa (out-of-fold predictions against the given labels: accuracy
    # above chance), the model is too weak to judge labels: its suspects would be its mistakes.
    min_kappa: float = Field(0.5, ge=-1, le=1)


def select(train: schema.Dataset, params: LabelAuditParams, seed: int):
    """(rows, labels, notes): the train rows to audit and their label tuples (category ids).

    Single-label: images with exactly one label; classes with fewer than 2 of them are left
    out (no fold could hold one out). Over `max_images`, a stratified sample: each class
    keeps its share, and at least `folds` images where it has them.
    """
    multi = train.label_mode == "multi"
    labels = [image.labels for image in train.images]
    keep = [r for r, t in enumerate(labels) if t is not None and (multi or len(t) == 1)]
    notes = []
    if not multi:
        counts = Counter(labels[r][0] for r in keep)
        names = {c.id: c.name for c in train.categories}
        if small := sorted(names.get(c, str(c)) for c, n in counts.items() if n < 2):
            notes.append(f"not audited: classes with a single train image: {small}")
            keep = [r for r in keep if counts[labels[r][0]] >= 2]
    rows = np.array(keep, dtype=np.int64)
    if len(rows) > params.max_images:
        rng = np.random.default_rng(seed)
        if multi:
            rows = np.sort(rng.choice(rows, params.max_images, replace=False))
        else:
            rows = _stratified(rows, [labels[r][0] for r in rows], params, rng)
        notes.append(
            f"audited a {'stratified ' if not multi else ''}random sample of {len(rows)} of "
            f"{len(keep)} train images (label_audit.max_images {params.max_images})"
        )
    return rows, [labels[r] for r in rows], notes


def _stratified(rows: np.ndarray, classes: list[int], params: LabelAuditParams, rng):
    """About max_images of `rows`, each class its share (and at least `folds`), sorted."""
    classes = np.array(classes)
    fraction = params.max_images / len(rows)
    chosen = []
    for c in np.unique(classes):
        members = rows[classes == c]
        take = min(len(members), max(params.folds, int(len(members) * fraction)))
        chosen.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(chosen))


_job: dict = {}  # the worker's arguments, set once per process by _init


def _init(raw_dir: str, size: tuple[int, int], channels: int) -> None:
    _job.update(raw_dir=Path(raw_dir), size=size, channels=channels)


def _pixels(file_names: list[str]) -> bytes:
    """The shrunk pixels of a chunk of files, concatenated: a few KB cross the pool, not images."""
    shrink = lambda name: load(_job["raw_dir"] / name, _job["channels"], _job["size"])  # noqa: E731
    return b"".join(shrink(name).tobytes() for name in file_names)


def load_pixels(raw_dir: Path, files: list[str], params: LabelAuditParams) -> np.ndarray:
    """uint8 [len(files), h * w * channels]: each file shrunk by `images.load`, in order."""
    size, channels = tuple(params.image_size), params.channels
    width = size[0] * size[1] * channels
    out = np.zeros((len(files), width), np.uint8)
    chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
    parallel = len(files) >= MIN_PARALLEL
    if parallel:  # spawned, not forked: see checks.decode_all
        processes = len(os.sched_getaffinity(0))
        pool = multiprocessing.get_context("spawn").Pool(
            processes, _init, (str(raw_dir), size, channels)
        )
    else:
        pool = contextlib.nullcontext()
        _init(str(raw_dir), size, channels)
    bar = progress.bar(len(files), "label audit")
    with pool, bar:
        results = pool.imap(_pixels, chunks) if parallel else map(_pixels, chunks)
        for k, data in enumerate(results):
            block = np.frombuffer(data, np.uint8).reshape(-1, width)
            out[k * CHUNK : k * CHUNK + len(block)] = block
            bar.update(len(block))
    return out


def _classifier(params: LabelAuditParams, seed: int, multi: bool):
    """Standardized pixels into the params' linear model (one-vs-rest for multi-label)."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if params.model == "logistic":
        head = LogisticRegression(max_iter=1000)
    else:  # sgd: one pass per epoch over the rows, for hundreds of thousands of images
        head = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed)
    return make_pipeline(StandardScaler(), OneVsRestClassifier(head) if multi else head)


def out_of_fold(
    pixels: np.ndarray, y: np.ndarray, folds: int, params: LabelAuditParams, seed: int
) -> np.ndarray:
    """Predicted probabilities of every row from a model that never saw it: k-fold
    (stratified for single-label y [N], plain for multi-hot y [N, K]) cross_val_predict."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    multi = y.ndim == 2
    split = KFold if multi else StratifiedKFold
    cv = split(n_splits=folds, shuffle=True, random_state=seed)
    x = pixels.astype(np.float32) / 255.0
    # One BLAS thread: on these small matrices more threads spin on each other (20x slower
    # on 2 busy cores); lbfgs iteration caps and constant one-vs-rest columns only warn.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        return cross_val_predict(
            _classifier(params, seed, multi), x, y, cv=cv, method="predict_proba"
        )


def find_issues(y: np.ndarray, probs: np.ndarray, params: LabelAuditParams):
    """(rows ranked worst first, their label quality scores) by cleanlab."""
    kwargs = {"filter_by": params.filter_by, "return_indices_ranked_by": params.rank_by}
    if y.ndim == 1:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    else:  # cleanlab's multi-label functions take each image's list of class indices
        from cleanlab.multilabel_classification.filter import find_label_issues
        from cleanlab.multilabel_classification.rank import get_label_quality_scores

        y = [list(np.flatnonzero(row)) for row in y]
    ranked = find_label_issues(y, probs, n_jobs=1, **kwargs)
    quality = get_label_quality_scores(y, probs, method=params.rank_by)
    return np.asarray(ranked, dtype=np.int64), quality[ranked]


def _targets(train: schema.Dataset, labels: list[tuple[int, ...]]):
    """(y, class names of its columns): indices into the classes present [N] (single-label),
    or multi-hot over every category [N, K] (multi-label)."""
    names = {c.id: c.name for c in train.categories}
    if train.label_mode == "multi":
        y = np.zeros((len(labels), len(names)), np.uint8)
        for row, ids in enumerate(labels):
            y[row, [c - 1 for c in ids]] = 1
        return y, [c.name for c in train.categories]
    present, y = np.unique([t[0] for t in labels], return_inverse=True)
    return y.astype(np.int64), [names.get(int(c), str(c)) for c in present]


def _folds(y: np.ndarray, params: LabelAuditParams, notes: list[str]) -> int:
    """k: params folds, fewer when the smallest class (or the split) has fewer images."""
    smallest = len(y) if y.ndim == 2 else int(np.bincount(y).min())
    if smallest < params.folds:
        notes.append(
            f"{smallest} folds, not {params.folds}: the smallest class has {smallest} images"
        )
    return min(params.folds, smallest)


def _summary(train: schema.Dataset, params: LabelAuditParams) -> dict:
    size, colour = "x".join(map(str, params.image_size)), "gray" if params.channels == 1 else "RGB"
    method = (
        f"cleanlab find_label_issues (filter_by {params.filter_by}, ranked by {params.rank_by})"
        f" on out-of-fold {params.model} probabilities of {size} {colour} pixels"
    )
    found = {"method": method, "label_mode": train.label_mode, "train_images": len(train.images)}
    found |= dict.fromkeys(("audited", "folds", "accuracy", "kappa", "count"), 0)
    return found | {"inconclusive": None, "notes": [], "issues": []}


def _agreement(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(accuracy, Cohen's kappa) of the out-of-fold predictions against the given labels
    (multi-label: exact-set accuracy; kappa over every image x class decision)."""
    from sklearn.metrics import cohen_kappa_score

    if y.ndim == 1:
        predicted = probs.argmax(axis=1)
        accuracy, kappa = (predicted == y).mean(), cohen_kappa_score(y, predicted)
    else:
        predicted = (probs >= 0.5).astype(y.dtype)
        accuracy = (predicted == y).all(axis=1).mean()
        kappa = cohen_kappa_score(y.ravel(), predicted.ravel())
    return round(float(accuracy), 4), round(float(np.nan_to_num(kappa)), 4)


def audit(raw_dir: Path, train: schema.Dataset, params: LabelAuditParams, seed: int) -> dict:
    """Audit the train split's labels; return a summary and its `issues`, ranked worst first.

    Each issue: rank, file, source (its annotation row), given and suggested class names
    (comma-joined for multi-label), quality (cleanlab's label quality score, 0 worst .. 1)
    and confidence (the model's out-of-fold probability of the suggestion). Data too small to
    audit (fewer than 2 classes of 2 images) gives no issues and a note, never an error; a
    model too weak to judge (kappa below min_kappa) gives none and says so (`inconclusive`).
    """
    found = _summary(train, params)
    if params.model == "none":
        found["notes"].append("not run: params label_audit.model is none")
        return found
    rows, labels, found["notes"] = select(train, params, seed)
    y, columns = _targets(train, labels)
    if len(rows) < 2 or (y.ndim == 1 and len(columns) < 2):
        found["notes"].append("not run: fewer than 2 classes with 2 or more train images")
        return found
    pixels = load_pixels(raw_dir, [train.images[r].file_name for r in rows.tolist()], params)
    found["folds"] = folds = _folds(y, params, found["notes"])
    progress.say(f"label audit: {folds}-fold {params.model} on {len(rows)} images")
    probs = out_of_fold(pixels, y, folds, params, seed)
    found["audited"] = len(rows)
    found["accuracy"], found["kappa"] = _agreement(y, probs)
    if found["kappa"] < params.min_kappa:
        found["inconclusive"] = (
            f"the model is too weak to judge labels (out-of-fold accuracy {found['accuracy']}, "
            f"kappa {found['kappa']} < min_kappa {params.min_kappa}): it would list its mistakes"
        )
        return found
    ranked, quality = find_issues(y, probs, params)
    found["count"] = len(ranked)
    for rank, (k, score) in enumerate(zip(ranked.tolist(), quality.tolist(), strict=True), 1):
        image = train.images[int(rows[k])]
        given, suggested, confidence = _labels(y[k], probs[k], columns)
        found["issues"].append(
            {"rank": rank, "file": image.file_name, "source": image.source, "given": given}
            | {"suggested": suggested, "quality": round(score, 6), "confidence": confidence}
        )
    return found


def _labels(y: np.ndarray, probs: np.ndarray, columns: list[str]) -> tuple[str, str, float]:
    """(given, suggested, the probability of the suggestion) of one image.

    Multi-label: the classes at or above 0.5, and the probability of exactly that set."""
    if y.ndim == 0:
        best = int(np.argmax(probs))
        return columns[int(y)], columns[best], round(float(probs[best]), 6)
    chosen = probs >= 0.5
    join = lambda mask: ",".join(c for c, on in zip(columns, mask, strict=True) if on)  # noqa: E731
    return join(y > 0), join(chosen), round(float(np.prod(np.where(chosen, probs, 1 - probs))), 6)
