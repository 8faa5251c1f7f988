"""A multi-label dataset trains with sigmoid outputs and binary cross-entropy and reports
micro/macro F1, per-class AP and a per-class confusion summary, through the real stages;
its bundle serves temperature-scaled scores and applies each class's cut-off."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import servers
from conftest import ROOT, details, edit_params, run_stage
from PIL import Image

from data_processing import schema
from data_processing.records import Record, assemble
from models.common import serving
from models.common.postprocess import scale

pytestmark = pytest.mark.slow
NAMES = ("bar", "column")


def write_multilabel(project: Path, n: dict[str, int]) -> None:
    """Images with a horizontal bar, a vertical column, both or neither."""
    rng = np.random.default_rng(1)
    raw = project / "datasets" / "raw" / "ml"
    for split, count in n.items():
        (raw / split).mkdir(parents=True)
        records = []
        for i in range(count):
            labels = tuple(name for k, name in enumerate(NAMES) if (i >> k) & 1)
            img = rng.integers(0, 40, (8, 8)).astype(np.uint8)
            if "bar" in labels:
                img[int(rng.integers(1, 7)), :] = 255
            if "column" in labels:
                img[:, int(rng.integers(1, 7))] = 255
            Image.fromarray(img, "L").save(raw / split / f"{i:03d}.png")
            records.append(Record(f"{split}/{i:03d}.png", 8, 8, labels=labels))
        dataset = assemble("ml", split, records, list(NAMES), "multi", "test")
        schema.save(dataset, project / "datasets" / "normalized" / "ml" / f"{split}.json")


def test_multilabel_train_and_evaluate(project: Path) -> None:
    write_multilabel(project, {"train": 48, "test": 16})
    edit_params(project / "params.yaml", datasets=["ml"], train={"image_size": [8, 8]})
    edit_params(project / "params.yaml", hparams={"quick": {"epochs": 5, "batch_size": 8}})
    # no dropout: the first epoch's loss then tells binary from categorical cross-entropy
    edit_params(project / "params.yaml", models={"mlp": {"dropout": 0.0}})
    steps = [
        (
            "data_processing.shard",
            "datasets/raw/ml",
            "datasets/normalized/ml",
            "datasets/shards/ml",
        ),
        ("models.train", "ml", "mlp", "quick"),
        ("models.evaluate", "ml", "mlp", "quick"),
        ("models.export", "ml", "mlp", "quick"),
    ]
    for package in ("data_processing", "models"):  # export copies code/ from the cwd
        ignore = shutil.ignore_patterns("runs", "plots", "metrics", "__pycache__")
        shutil.copytree(ROOT / package, project / package, ignore=ignore)
    for module, *args in steps:
        proc = run_stage(module, *args, cwd=project)
        assert proc.returncode == 0, proc.stderr[-2000:]
    train = json.loads((project / "models/runs/ml-mlp-quick/train/train.json").read_text())
    assert train["spec"]["label_mode"] == "multi"
    import keras

    model = keras.saving.load_model(project / "models/runs/ml-mlp-quick/train/model.keras")
    assert model.layers[-1].activation.__name__ == "sigmoid"
    loss = model.loss if isinstance(model.loss, str) else model.loss.name
    assert loss == "binary_crossentropy", loss
    test = details(project, "ml-mlp-quick")["test"]
    assert {"f1_micro", "f1_macro", "map", "accuracy"} <= set(test)
    per_class = json.loads((project / "models/plots/per_class/ml-mlp-quick.json").read_text())
    assert [r["class"] for r in per_class] == list(NAMES)
    assert all({"ap", "tp", "fp", "fn", "tn"} <= set(r) for r in per_class)
    lines = (project / "models/runs/ml-mlp-quick/eval/predictions.jsonl").read_text()
    records = [json.loads(line) for line in lines.splitlines()]
    rows = [r["probs"] for r in records]
    assert len(rows) == 16
    # each class's confusion counts, recomputed from the predictions at the 0.5 threshold
    truth = schema.load(project / "datasets/normalized/ml/test.json")
    labels = {i.file_name: set(i.labels) for i in truth.images}
    for k, row in enumerate(per_class):
        true = np.array([k + 1 in labels[r["file"]] for r in records])
        pred = np.array([r["probs"][k] >= 0.5 for r in records])
        counts = {"tp": true & pred, "fp": ~true & pred, "fn": true & ~pred, "tn": ~true & ~pred}
        assert {name: row[name] for name in counts} == {n: int(m.sum()) for n, m in counts.items()}
    assert all(len(row) == 2 for row in rows)
    assert not all(np.isclose(sum(row), 1.0) for row in rows)  # sigmoid, not softmax
    check_bundle_cut_offs(project / "models/runs/ml-mlp-quick/bundle", project / "ml")


def check_bundle_cut_offs(bundle: Path, edited: Path) -> None:
    """The bundle carries a temperature and a max-F1 cut-off per class (params `calibrate`);
    both backends serve the scaled scores and decide each class at its own cut-off."""
    record = json.loads((bundle / "calibration.json").read_text())
    assert record["label_mode"] == "multi" and record["fitted"]
    assert record["thresholds"]["target"] == "max_f1"
    cuts = {row["index"]: row["threshold"] for row in record["thresholds"]["classes"]}
    assert sorted(cuts) == [0, 1] and all(0 < t < 1 for t in cuts.values())
    assert all({"val", "test"} <= set(row) for row in record["thresholds"]["classes"])
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 256, (16, 8, 8, 1), np.uint8)
    batch[::2, 3, :] = 255  # half with a bar
    for backend in ("onnx", "tf"):
        predictor = serving.load(bundle, backend)
        scores = predictor.predict(batch)
        expected = scale(predictor.model_probs(batch), record["temperature"], "multi")
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
        present = predictor.decide(scores)
        assert (present == (scores >= [cuts[0], cuts[1]])).all()
    # the cut-offs decide, not 0.5: at 0 and above 1, every image has the first class only
    shutil.copytree(bundle, edited, ignore=shutil.ignore_patterns("saved_model", "triton"))
    for row in record["thresholds"]["classes"]:
        row["threshold"] = [0.0, 1.01][row["index"]]
    (edited / "calibration.json").write_text(json.dumps(record))
    present = serving.load(edited, "onnx").decide(scores)
    assert present[:, 0].all() and not present[:, 1].any()
    # ... and the server answers with them: /predict's labels_present
    with servers.running(edited.parent, "--bundle", edited, name="ml") as srv:
        status, answer = servers.call(srv, "POST", "/predict", *servers.multipart(servers.png(1)))
    assert status == 200 and answer["labels_present"] == ["bar"], answer
    assert answer["label"] == answer["top_k"][0]["label"]  # multi-label: the top score
