"""Evaluate one trained cell on its test split: metrics, confusion, failures, curves, profile.

Reads models/runs/<cell>/train/ and datasets/decoded/<dataset>/test.npz. Writes
models/metrics/<cell>.json, models/runs/<cell>/eval/predictions.json and the plots
models/plots/{confusion,per_class}/<cell>.json and {failures,curves}/<cell>.png.

Run: python -m models.evaluate digits cnn base
"""

import json
import sys

import numpy as np

from data_processing.errors import exit_on_error
from data_processing.io import staged_dir, write_json
from data_processing.params import Params, load_params
from models.common import metrics, plots, profile
from models.common.data import Split, load_split
from models.common.paths import Cell
from models.common.quiet import import_tensorflow


class EvaluateParams(Params):
    n_failures: int = 16  # confident mistakes in the failure grid
    profile_repeats: int = 20  # timed calls per batch size
    threshold: float = 0.5  # multi-label: a class is predicted at or above this probability


def evaluate(model, test: Split, params: EvaluateParams) -> dict:
    """Return probabilities, metrics, confusion records, failure grid and profile."""
    fn = profile.compiled(model)
    probs = np.concatenate(
        [np.asarray(fn(test.images[i : i + 256])) for i in range(0, len(test.images), 256)]
    )
    y, names = test.labels, test.categories
    pred = metrics.predict(probs, test.label_mode, params.threshold)
    worst = metrics.confident_mistakes(y, probs, pred, params.n_failures)
    timing = {
        "params": int(model.count_params()),
        "saved_model_mb": profile.saved_model_mb(model),
        "infer_ms_b1": profile.ms_per_image(fn, test.images[:1], params.profile_repeats),
        "infer_ms_b256": profile.ms_per_image(
            fn, profile.tile_to(test.images, 256), max(3, params.profile_repeats // 4)
        ),
    }
    return {
        "probs": probs,
        "scores": metrics.summary(y, probs, names, test.label_mode, params.threshold),
        "profile": timing,
        "confusion": metrics.confusion(y, pred, names),
        "failures": (
            test.images[worst],
            [metrics.caption(y[i], probs[i], pred[i], names) for i in worst],
        ),
    }


@exit_on_error
def main() -> None:
    cell = Cell(*sys.argv[1:4])
    params = load_params("evaluate", EvaluateParams)
    import_tensorflow()
    import keras

    model = keras.saving.load_model(cell.train_dir / "model.keras")
    summary = json.loads((cell.train_dir / "train.json").read_text())
    test = load_split(cell.decoded / "test.npz")
    result = evaluate(model, test, params)
    scores = result["scores"]
    with staged_dir(cell.eval_dir) as out_dir:
        write_json(
            out_dir / "predictions.json",
            {
                "categories": test.categories,
                "predictions": {
                    str(f): [round(float(p), 7) for p in row]
                    for f, row in zip(test.file_names, result["probs"], strict=True)
                },
            },
        )
    write_json(
        cell.metrics,
        {
            "test": {k: round(v, 6) for k, v in scores.items() if k != "per_class"},
            "train": {
                k: summary[k] for k in ("seconds", "epochs", "best_epoch", "images_per_second")
            },
            "profile": {k: round(v, 4) for k, v in result["profile"].items()},
        },
    )
    write_json(cell.plot("confusion", "json"), result["confusion"])
    write_json(cell.plot("per_class", "json"), scores["per_class"])
    images, captions = result["failures"]
    cell.plot("failures", "png").parent.mkdir(parents=True, exist_ok=True)
    cell.plot("failures", "png").write_bytes(
        plots.failures_png(images, captions, f"{cell.name}: most confident mistakes")
    )
    cell.plot("curves", "png").parent.mkdir(parents=True, exist_ok=True)
    cell.plot("curves", "png").write_bytes(plots.curves_png(summary["history"], cell.name))
    print(
        f"evaluate: {cell.name}: accuracy {scores['accuracy']:.4f}, "
        f"macro F1 {scores['f1_macro']:.4f} -> {cell.metrics}"
    )


if __name__ == "__main__":
    main()
