"""End to end on ordinary photos: about 1,000 generated JPEGs of mixed sizes (32 to 4,000 px)
and modes (L, RGB, RGBA, palette, CMYK, 16-bit, EXIF-rotated), 10 classes, in the seed folder
format; a real `dvc repro` passes every stage, deploy_test included on both backends, and
the server's answer for a raw test file is evaluate's."""

import json
from pathlib import Path

import pytest
from conftest import (
    BIN,
    assert_same_model,
    commit_and_repro,
    copy_project,
    details,
    edit_params,
    sh,
)
from photos import write_photo_dataset

pytestmark = [pytest.mark.slow, pytest.mark.scale]

N = 1000
SIZE = [64, 64]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("photos") / "repo", models=("cnn",))
    edit_params(
        repo / "params.yaml",
        datasets=["photos"],
        train={"image_size": SIZE},
        hparams={"quick": {"epochs": 6, "batch_size": 32, "learning_rate": 0.003}},
        shard={"n_samples": 24},
    )
    summary = write_photo_dataset(repo / "datasets/raw/photos", N, max_side=640, large=2, seed=3)
    assert summary
    commit_and_repro(repo, "photos", "project with photos")
    return repo


def test_every_stage_passes_and_the_model_learns(repo: Path) -> None:
    metrics = details(repo, "photos-cnn-quick")["test"]
    assert metrics["accuracy"] > 0.3  # 10 classes: chance is 0.1
    meta = json.loads((repo / "datasets/shards/photos/meta.json").read_text())
    assert meta["image_size"] == SIZE and meta["channels"] == 3
    assert sum(s["count"] for s in meta["splits"].values()) == N
    report = json.loads((repo / "datasets/reports/photos/validate.json").read_text())
    modes = set().union(*(s["modes"] for s in report["splits"].values()))
    assert {"L", "RGB", "RGBA", "P", "CMYK"} <= modes and modes & {"I;16", "I"}


def test_deploy_test_passes_on_both_backends(repo: Path) -> None:
    result = json.loads((repo / "deployment/photos/deploy_test.json").read_text())["photos"]
    result = result["deploy_test"]
    assert result["passed"] is True
    for backend in ("tf", "onnx"):
        assert result[backend]["samples"] == 24
        assert result[backend]["tolerance_used"] <= 1.0, result


def test_the_bundle_predicts_raw_files_as_evaluate_did(repo: Path) -> None:
    """Every test file of a mode or size that differs from the training cache's, on onnx."""
    lines = (repo / "models/runs/photos-cnn-quick/eval/predictions.jsonl").read_text()
    expected = {r["file"]: r["probs"] for r in map(json.loads, lines.splitlines())}
    raw = repo / "datasets/raw/photos"
    files = [f for f in expected if not f.endswith(".jpg")][:20]  # PNG modes
    files += [f for f in expected if f.endswith(".jpg")][:20]
    script = (
        "import json, sys; from deployment.server.bundle import load_bundle; "
        "p = load_bundle('deployment/photos/production', backend=sys.argv[1]).predictor; "
        "files = json.loads(sys.argv[2]); root = sys.argv[3]; "
        "print(json.dumps({f: p.predict(p.prepare(f'{root}/{f}')[None])[0].tolist() "
        "for f in files}))"
    )
    for backend in ("onnx", "tf"):
        out = sh(str(BIN / "python"), "-c", script, backend, json.dumps(files), str(raw), cwd=repo)
        got = json.loads(out.strip().splitlines()[-1])
        assert_same_model([expected[f] for f in files], [got[f] for f in files])
