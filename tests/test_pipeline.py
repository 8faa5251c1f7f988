"""End to end: a temporary git repo with a copy of this project and a tiny generated dataset;
real `dvc repro`, `dvc exp run`, `dvc exp show`, `dvc plots show` and `dvc plots diff`."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, edit_params, write_seed_dataset

pytestmark = pytest.mark.slow
BIN = Path(os.sys.executable).parent
OFFLINE_TEMPLATE = ".dvc/plots/offline.html"  # built by `make install`


def sh(*cmd: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the project (tracked and new files, plus the offline plot template) into a new
    git repo, add a tiny dataset with `dvc add`, and run `dvc repro` once."""
    assert (ROOT / OFFLINE_TEMPLATE).is_file(), f"{OFFLINE_TEMPLATE} missing: run `make install`"
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in [*files, OFFLINE_TEMPLATE]:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    (repo / "dvc.lock").unlink(missing_ok=True)
    grid = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    edit_params(repo / "params.yaml", models=None)  # the grid: two models
    edit_params(repo / "params.yaml", models={m: grid[m] for m in ("mlp", "cnn")})
    edit_params(
        repo / "params.yaml",
        datasets=["tiny"],
        train={
            "epochs": 12,
            "batch_size": 8,
            "image_size": [16, 16],
            "early_stopping": {"monitor": "val/loss", "patience": 4},
        },
        select={"min_f1": 0.0, "min_precision": 0.0, "min_recall": 0.0},
        deploy_test={"n_samples": 6},
        evaluate={"n_failures": 4, "profile_repeats": 3},
    )
    write_seed_dataset(repo / "datasets" / "raw" / "tiny", {"train": 12, "test": 4})
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "add", "-q", "datasets/raw/tiny", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "project with a tiny dataset", cwd=repo)
    sh("dvc", "repro", cwd=repo)
    return repo


def test_repro_writes_metrics_for_every_cell(repo: Path) -> None:
    for model in ("mlp", "cnn"):
        metrics = json.loads((repo / f"models/metrics/tiny-{model}.json").read_text())
        assert 0.0 <= metrics["test"]["f1_macro"] <= 1.0
        assert metrics["profile"]["params"] > 0 and metrics["profile"]["infer_ms_b1"] > 0
        assert metrics["profile"]["saved_model_mb"] > 0
        for kind, ext in (
            ("confusion", "json"),
            ("failures", "png"),
            ("curves", "png"),
            ("loss", "tsv"),
            ("accuracy", "tsv"),
            ("per_class", "json"),
        ):
            assert (repo / f"models/plots/{kind}/tiny-{model}.{ext}").stat().st_size > 0
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo))
    data = shown[""]["data"]  # "" is the workspace
    assert {"models/metrics/tiny-mlp.json", "models/metrics/tiny-cnn.json"} <= set(data)


def test_bundle_contents_and_lineage(repo: Path) -> None:
    pointer = json.loads((repo / "deployment/production.json").read_text())
    bundle = repo / pointer["bundle"]
    for name in (
        "model.keras",
        "saved_model/saved_model.pb",
        "labels.json",
        "params.json",
        "metrics.json",
        "lineage.json",
        "MODEL_CARD.md",
        "code/__main__.py",
        f"code/models/architectures/{pointer['model']}.py",
        "code/models/common/serving.py",
        "code/data_processing/images.py",
    ):
        assert (bundle / name).is_file(), name
    assert json.loads((bundle / "labels.json").read_text()) == ["bar", "column", "diagonal"]
    lineage = json.loads((bundle / "lineage.json").read_text())
    assert len(lineage["commit"]) == 40 and lineage["seed"] == 42
    assert lineage["data"]["datasets/raw/tiny"]  # md5 from dvc.lock
    assert lineage["dataset_version"] == lineage["data"]["datasets/raw/tiny"]
    assert lineage["images"] == {"train": 30, "val": 6, "test": 12}
    card = (bundle / "MODEL_CARD.md").read_text()
    assert f"# Model card: tiny-{pointer['model']}" in card and "## Limits" in card
    assert "| bar |" in card  # per-class metrics table
    assert lineage["packages"]["tensorflow"] == "2.21.0"


def test_deploy_test_passed(repo: Path) -> None:
    result = json.loads((repo / "deployment/deploy_test.json").read_text())["deploy_test"]
    assert result["passed"] is True and result["clean_imports"] is True
    assert result["label_agreement"] == 1.0 and result["max_abs_diff"] <= 1e-5
    assert result["samples"] == 6 and result["variants_ok"] is True


def test_second_repro_is_a_noop(repo: Path) -> None:
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage" not in out and "up to date" in out


def test_plots_render_offline(repo: Path) -> None:
    sh("dvc", "plots", "show", "-o", "plots_out", cwd=repo)
    html = (repo / "plots_out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    for kind in ("loss", "accuracy", "confusion", "per_class", "failures", "curves"):
        for model in ("mlp", "cnn"):
            assert f"models_plots_{kind}_tiny-{model}_" in html, (kind, model)


def test_experiment_shows_in_table_and_plots_diff(repo: Path) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline results", cwd=repo)
    sh("dvc", "exp", "run", "-n", "short", "-S", "train.epochs=2", cwd=repo)
    table = sh("dvc", "exp", "show", "--csv", cwd=repo)
    header, *rows = table.strip().splitlines()
    assert "test.f1_macro" in header and "train.epochs" in header
    assert any(row.startswith("short,") or ",short," in row for row in rows), table
    diff = json.loads(sh("dvc", "plots", "diff", "HEAD", "short", "--json", cwd=repo))
    ids = set(diff["data"])
    assert {"models/plots/confusion/tiny-cnn.json", "models/plots/loss/tiny-mlp.tsv"} <= ids
    assert any(i.endswith("failures/tiny-mlp.png") for i in ids)
    confusion = diff["data"]["models/plots/confusion/tiny-cnn.json"][0]
    assert set(confusion["revisions"]) == {"HEAD", "short"}


def test_deploy_test_catches_a_tampered_bundle(repo: Path, tmp_path: Path) -> None:
    pointer = json.loads((repo / "deployment/production.json").read_text())
    bundle = tmp_path / "bundle"
    shutil.copytree(repo / pointer["bundle"], bundle)
    labels = json.loads((bundle / "labels.json").read_text())
    (bundle / "labels.json").write_text(json.dumps(labels[::-1]))  # wrong label order
    (tmp_path / "pointer.json").write_text(json.dumps({**pointer, "bundle": str(bundle)}))
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "deployment.deploy_test",
            str(tmp_path / "pointer.json"),
            str(tmp_path / "result.json"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    result = json.loads((tmp_path / "result.json").read_text())["deploy_test"]
    assert result["passed"] is False and result["labels_match"] is False


def test_unknown_model_in_params_stops_repro(repo: Path) -> None:
    params = (repo / "params.yaml").read_text()
    edit_params(repo / "params.yaml", models={"resnet9000": {}})
    try:
        proc = subprocess.run(
            [str(BIN / "dvc"), "repro"], cwd=repo, capture_output=True, text=True, timeout=300
        )
    finally:
        (repo / "params.yaml").write_text(params)
    assert proc.returncode != 0
    assert "models/architectures/resnet9000.py" in proc.stderr + proc.stdout


def test_same_inputs_give_identical_metrics(repo: Path) -> None:
    before = json.loads((repo / "models/metrics/tiny-mlp.json").read_text())["test"]
    sh("dvc", "repro", "-f", "-s", "train@tiny-mlp", cwd=repo)
    out = sh("dvc", "repro", "-f", "-s", "evaluate@tiny-mlp", cwd=repo)
    assert "Running stage 'evaluate@tiny-mlp'" in out
    after = json.loads((repo / "models/metrics/tiny-mlp.json").read_text())["test"]
    assert after == before
