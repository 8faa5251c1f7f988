"""MODEL_CARD.md for an export bundle: what it is, its data, its metrics, use and limits."""


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _calibration(metrics: dict) -> str:
    """The Limits line on calibration, from metrics.json's `calibration` (when evaluate wrote
    one)."""
    cal = metrics.get("calibration")
    if not cal or cal["temperature"] == 1.0:
        return "- Scores are not calibrated probabilities."
    return (
        f"- Scores are temperature-scaled (T = {cal['temperature']:.4g}, fitted on the "
        f"validation split; test ECE {cal['test_ece_before']:.4f} -> "
        f"{cal['test_ece_after']:.4f}) by code/ from calibration.json; model.onnx and the "
        "Triton repository give the model's own, unscaled scores."
    )


def model_card(
    lineage: dict, params: dict, metrics: dict, per_class: list[dict], labels: list[str]
) -> str:
    """Return the card as Markdown, from the bundle's own lineage, params and metrics."""
    spec, hparams = params["spec"], params[f"hparams.{params['hparams']}"]
    height, width = spec["image_size"]
    test = metrics["test"]
    lines = [
        f"# Model card: {lineage['cell']}",
        "",
        f"A `{lineage['model']}` image classifier (hyperparameter set `{lineage['hparams']}`) "
        "trained by reprovision on the "
        f"`{lineage['dataset']}` dataset ({spec['label_mode']}-label, "
        f"{spec['num_classes']} classes: {', '.join(labels)}).",
        "",
        "## Data",
        f"- dataset `{lineage['dataset']}`, version (md5 of the raw data): "
        f"`{lineage.get('dataset_version')}`",
        f"- train/validation/test images: {lineage.get('images', {})}",
        f"- seed {lineage['seed']}; code sha256 `{lineage['code_sha256'][:16]}` (code/)",
        "",
        "## Metrics (test split)",
        *_table([{k: v for k, v in test.items()}], list(test)),
        "",
        "Per class:",
        *_table(per_class, ["class", "precision", "recall", "f1", "support"]),
        "",
        "## Training",
        f"- epochs {metrics['train']['epochs']} (best {metrics['train']['best_epoch']}), "
        f"hyperparameter set `{params['hparams']}`: {hparams['optimizer']}, "
        f"batch {hparams['batch_size']}, learning rate {hparams['learning_rate']} "
        f"({hparams['schedule']})",
        f"- parameters {metrics['profile']['params']:,}; model.keras "
        f"{metrics['profile']['size_mb']:.2f} MB",
        "",
        "## Intended use",
        f"Classifying images like those of `{lineage['dataset']}` into the classes above. "
        "Inputs are raw uint8 images of any size and mode; the graph resizes them to "
        f"{height}x{width} and standardizes each one, and `code/` converts modes as training did "
        f"({'grayscale' if spec['channels'] == 1 else 'RGB'}).",
        "",
        "## Limits",
        "- Only these classes exist: an image of anything else still gets one of them"
        + (" (check the score)." if spec["label_mode"] == "single" else "."),
        f"- Images far from the training distribution ({lineage['dataset']}) are unreliable; "
        "the metrics above hold only for data like its test split.",
        _calibration(metrics),
        "",
        "## Files",
        "model.keras, model.onnx (input uint8 [N, H, W, C]), "
        "labels.json, params.json, metrics.json, lineage.json, calibration.json, code/ "
        "(`python -B -E -s code --bundle . --images IMAGES.json --out OUT.json`), "
        f"triton/{lineage['cell']}/ (a Triton model repository) and kserve/ "
        "(InferenceServices for our server's image and for Triton).",
    ]
    return "\n".join(lines) + "\n"
