"""Evaluate one trained cell on its test split: metrics, confusion, failures, curves, profile.

First fits what the bundle serves after the model on the validation split training held out
(params `calibrate`, common/calibrate.py): a temperature and, for binary and multi-label
data, per-class cut-offs. Then streams datasets/shards/<dataset>/ (test records) through the
model in bounded memory: confusion counts, a heap of the worst mistakes, top-k predictions
written as they come. Test scores (accuracy, F1, AP) are the model's; the temperature
changes no argmax, nor which side of 0.5 a multi-label score is on.
Reads models/runs/<cell>/train/. Writes the headline models/metrics/<cell>.json, a DVC metric
kept in git: {accuracy, f1_macro, ece (the model's expected calibration error), size_mb
(model.keras)}; the plots
models/plots/{confusion,per_class,calibration,calibrated}/<cell>.json (calibration: the
model's reliability diagram, common/calibration.py; calibrated: the served scores') and
{failures,curves}/<cell>.png (each mistake beside its heat map, Grad-CAM or integrated
gradients, common/explain.py), and models/runs/<cell>/eval/:
    predictions.jsonl  one line per test image: {"file", "top": [[class index, p], ...]}
                       (top-k), plus "probs" (all K) when the split is small (served scores)
    reference.json     test-set distributions for drift monitoring (common/reference.py)
    samples.json       the shards' sample test files (raw bytes) with their served scores:
                       the deploy test and the server's self-check replay them
    calibration.json   the temperature and cut-offs (common/postprocess.py), with validation
                       and test NLL / ECE before and after; export copies it into the bundle
    metrics.json       every figure: test scores, training epochs, calibration, parameters
                       and size (what the gate, the card and the leaderboard read)
and models/runs/<cell>/logs/profile.json: inference ms per image at batch 1 and 256 (timings:
not a DVC output, as no run would repeat them).

Run: python -m models.evaluate digits cnn base
"""

import heapq
import json
import sys

import numpy as np

from data_processing.core import cli, progress
from data_processing.core.errors import exit_on_error
from data_processing.core.io import staged_dir, write_json
from data_processing.core.params import BaseParams, Params, load_params
from models.common import metrics, plots, profile
from models.common.calibrate import CalibrateParams, Served, fit_on_validation
from models.common.data import Shards
from models.common.explain import explain
from models.common.paths import Cell
from models.common.quiet import import_tensorflow
from models.common.reference import Reference
from models.common.serving import TfPredictor
from models.common.spec import TrainParams

BATCH = 256
TOP_K = 5
FULL_PROBS_LIMIT = 1_000_000  # N x K below which predictions.jsonl carries every probability


class EvaluateParams(Params):
    n_failures: int = 16  # confident mistakes in the failure grid
    profile_repeats: int = 20  # timed calls per batch size
    threshold: float = 0.5  # multi-label: a class is predicted at or above this probability


class Failures:
    """The n most confident mistakes seen so far (a bounded heap)."""

    def __init__(self, n: int) -> None:
        self.n, self.heap = n, []

    def update(self, index, images, y, probs, pred, names) -> None:
        for row, e in zip(*metrics.mistakes(y, probs, pred), strict=True):
            key = (float(e), -int(index[row]))  # ties: the earlier image first
            if len(self.heap) < self.n or key > self.heap[0][0]:
                item = (
                    key,
                    images[row].copy(),
                    metrics.caption(y[row], probs[row], pred[row], names),
                )
                (heapq.heappush if len(self.heap) < self.n else heapq.heapreplace)(self.heap, item)

    def result(self, model) -> tuple[np.ndarray, list[str], np.ndarray | None, str]:
        """(images, captions, heat maps of `model`'s top class for each, their method),
        worst first: only these n images are explained (common/explain.py)."""
        worst = sorted(self.heap, key=lambda item: item[0], reverse=True)
        images = np.array([w[1] for w in worst])
        heatmaps, method = explain(model, images) if worst else (None, "")
        return images, [w[2] for w in worst], heatmaps, method


def _line(file: str, probs: np.ndarray, full: bool) -> str:
    top = np.argsort(-probs, kind="stable")[:TOP_K]
    record = {"file": file, "top": [[int(c), round(float(probs[c]), 7)] for c in top]}
    if full:
        record["probs"] = [round(float(p), 7) for p in probs]
    return json.dumps(record) + "\n"


def evaluate(model, shards: Shards, samples: dict, params: EvaluateParams, out, fitted) -> dict:
    """Stream the test split through `model`; write predictions.jsonl lines to `out`;
    record the served scores of the shards' `samples` (samples.json). `fitted` is the
    validation fit (calibrate.fit_on_validation): the scores served are the model's with
    its temperature.

    Returns:
        scores, confusion counts, failure grid, reference, the samples' probabilities,
        the runtime profile and the calibration record (validation and test).
    """
    names, files = shards.categories, shards.file_names("test")
    predict = TfPredictor(model, names, None).predict
    scores = metrics.Scores(names, shards.label_mode, params.threshold)
    failures, ref, served = Failures(params.n_failures), Reference(names), Served(fitted)
    wanted = {image["index"] for image in samples["images"]}
    sampled, first = {}, None
    full = len(files) * len(names) <= FULL_PROBS_LIMIT
    labels = shards.labels("test")
    bar = progress.bar(len(files), "evaluate")
    for index, images, _ in shards.dataset("test", BATCH, with_index=True):
        index, images = index.numpy(), images.numpy()
        first = images if first is None else first
        y = np.asarray(labels[index])
        model_probs = predict(images)
        pred = scores.update(y, model_probs)
        probs = served.update(y, model_probs)
        failures.update(index, images, y, probs, pred, names)
        ref.update(probs)
        for row, i in enumerate(index):
            out.write(_line(files[i], probs[row], full))
            if int(i) in wanted:
                sampled[int(i)] = [round(float(p), 7) for p in probs[row]]
        bar.update(len(index))
    bar.close()
    result = scores.result() | {"ece": served.before.ece(), "mce": served.before.mce()}
    timing = {
        "infer_ms_b1": profile.ms_per_image(predict, first[:1], params.profile_repeats),
        "infer_ms_b256": profile.ms_per_image(
            predict, profile.tile_to(first, 256), max(3, params.profile_repeats // 4)
        ),
    }
    return {
        "scores": result,
        "confusion": scores.confusion(),
        "failures": failures.result(model),
        "reference": ref.result(result["per_class"]),
        "reliability": served.before.reliability(),
        "reliability_served": served.after.reliability(),
        "calibration": served.result(),
        "sampled": sampled,
        "profile": timing,
    }


def samples_with_probs(samples: dict, sampled: dict, categories: list[str]) -> dict:
    """The shards' samples.json with each image's evaluated probabilities added."""
    images = [{**image, "probs": sampled[image["index"]]} for image in samples["images"]]
    return {"categories": categories, **samples, "images": images}


def headline(scores: dict, size_mb: float) -> dict:
    """models/metrics/<cell>.json: what `dvc metrics show` and `dvc metrics diff` compare,
    the same four keys in every cell's file (one row each in `dvc metrics show`)."""
    return {
        "accuracy": round(scores["accuracy"], 4),
        "f1_macro": round(scores["f1_macro"], 4),
        "ece": round(scores["ece"], 4),
        "size_mb": round(size_mb, 3),
    }


def metrics_record(scores: dict, summary: dict, profile: dict, calibration: dict) -> dict:
    """eval/metrics.json: test scores, training epochs, size and the calibration: the
    temperature and ECE of the served scores."""
    test = {  # per_class is a plot of its own
        k: v if isinstance(v, bool) else round(v, 6) for k, v in scores.items() if k != "per_class"
    }
    train = {k: summary[k] for k in ("epochs", "best_epoch")}
    served = {
        "temperature": calibration["temperature"],
        "val_nll_before": calibration["val"]["nll_before"],
        "val_nll_after": calibration["val"]["nll_after"],
        "test_ece_before": calibration["test"]["ece_before"],
        "test_ece_after": calibration["test"]["ece_after"],
    }
    return {"test": test, "train": train, "profile": profile, "calibration": served}


def write_plots(cell: Cell, result: dict, history: dict) -> None:
    """The cell's confusion, per-class and calibration data, failure grid and curves."""
    write_json(cell.plot("confusion", "json"), result["confusion"])
    write_json(cell.plot("per_class", "json"), result["scores"]["per_class"])
    write_json(cell.plot("calibration", "json"), result["reliability"])
    write_json(cell.plot("calibrated", "json"), result["reliability_served"])
    images, captions, heatmaps, method = result["failures"]
    title = f"{cell.name}: most confident mistakes" + (f", {method} beside each" if method else "")
    failures = plots.failures_png(images, captions, title, heatmaps)
    for kind, png in (("failures", failures), ("curves", plots.curves_png(history, cell.name))):
        cell.plot(kind, "png").parent.mkdir(parents=True, exist_ok=True)
        cell.plot(kind, "png").write_bytes(png)


def fit_calibration(model, shards: Shards) -> dict:
    """The validation fit for params `calibrate`, on the split `train` held out."""
    params = load_params("calibrate", CalibrateParams)
    val_fraction = load_params("train", TrainParams).val_fraction
    seed = load_params("base", BaseParams).seed
    predict = TfPredictor(model, shards.categories, None).predict
    return fit_on_validation(predict, shards, params, val_fraction, seed, BATCH)


def write_outputs(out_dir, result: dict, samples: dict, categories: list[str]) -> None:
    """eval/: reference.json, samples.json and calibration.json."""
    write_json(out_dir / "reference.json", result["reference"])
    write_json(
        out_dir / "samples.json", samples_with_probs(samples, result["sampled"], categories)
    )
    write_json(out_dir / "calibration.json", result["calibration"])


@exit_on_error
def main() -> None:
    cell = Cell(*cli.parse(__doc__, *cli.CELL))
    params = load_params("evaluate", EvaluateParams)
    import_tensorflow()
    import keras

    model = keras.saving.load_model(cell.train_dir / "model.keras")
    summary = json.loads((cell.train_dir / "train.json").read_text())
    shards = Shards.open(cell.shards)
    samples = shards.samples()
    fitted = fit_calibration(model, shards)
    size_mb = (cell.train_dir / "model.keras").stat().st_size / 2**20
    size = {"params": int(model.count_params()), "size_mb": round(size_mb, 3)}
    with staged_dir(cell.eval_dir) as out_dir:
        with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as out:
            result = evaluate(model, shards, samples, params, out, fitted)
        write_outputs(out_dir, result, samples, shards.categories)
        scores = result["scores"]
        record = metrics_record(scores, summary, size, result["calibration"])
        write_json(out_dir / "metrics.json", record)
    timing = {k: round(v, 4) for k, v in result["profile"].items()}
    write_json(cell.logs / "profile.json", timing)
    write_json(cell.metrics, headline(scores, size_mb))
    write_plots(cell, result, summary["history"])
    print(
        f"evaluate: {cell.name}: accuracy {scores['accuracy']:.4f}, "
        f"macro F1 {scores['f1_macro']:.4f} -> {cell.metrics}"
    )
    for warning in metrics.health_warnings(scores):
        print(f"warning: {cell.name}: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
