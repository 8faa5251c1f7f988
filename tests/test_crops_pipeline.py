"""The real dataset that once stopped `make run` (issue 23): small grayscale photo crops,
25x25, beside the default digits in one `dvc repro` of every model. Every cell exports (its
ONNX check passes) and passes the deploy test on both backends, not only the promoted one."""

import json
from pathlib import Path

import pytest
from conftest import BIN, commit_and_repro, copy_project, edit_params, sh
from photos import write_photo_dataset

pytestmark = [pytest.mark.slow, pytest.mark.scale]

MODELS = ("mlp", "cnn", "resnet", "vgg", "mobilenet")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("crops") / "repo", models=MODELS)
    edit_params(
        repo / "params.yaml",
        datasets=["digits", "crops"],
        train={"image_size": [25, 25]},
        hparams={"quick": {"epochs": 4, "batch_size": 16, "learning_rate": 0.003}},
    )
    write_photo_dataset(
        repo / "datasets/raw/crops", 300, classes=4, min_side=25, max_side=25, gray=True, seed=4
    )
    commit_and_repro(repo, "crops", "digits and 25x25 grayscale crops")
    return repo


@pytest.mark.parametrize("dataset", ["digits", "crops"])
def test_every_cell_exports_a_checked_onnx_model(repo: Path, dataset: str) -> None:
    for model in MODELS:
        lineage = repo / f"models/runs/{dataset}-{model}-quick/bundle/lineage.json"
        onnx = json.loads(lineage.read_text())["onnx"]
        assert onnx["label_agreement"] == 1.0 and onnx["tolerance_used"] <= 1.0, (model, onnx)


@pytest.mark.parametrize("dataset", ["digits", "crops"])
def test_the_deploy_test_passes_for_every_cell(repo: Path, dataset: str, tmp_path: Path) -> None:
    """deploy_test on each cell's bundle, as if it were promoted: both backends, a clean
    process, evaluate's scores for the embedded raw test files."""
    for model in MODELS:
        run = repo / f"models/runs/{dataset}-{model}-quick"
        pointer = tmp_path / f"{model}.json"
        pointer.write_text(
            json.dumps(
                {
                    "name": run.name,
                    "dataset": dataset,
                    "bundle": str(run / "bundle"),
                    "eval_samples": str(run / "eval/samples.json"),
                }
            )
        )
        out = tmp_path / f"{model}-deploy.json"
        sh(
            str(BIN / "python"),
            "-m",
            "deployment.release.deploy_test",
            str(pointer),
            str(out),
            cwd=repo,
        )
        result = json.loads(out.read_text())[dataset]["deploy_test"]  # keyed by the dataset
        assert result["passed"], (model, result)
