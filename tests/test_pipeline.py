"""End to end: a temporary git repo with a copy of this project and a tiny generated dataset;
real `dvc repro`, `dvc exp run`, `dvc exp show`, `dvc plots show` and `dvc plots diff`."""

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    BIN,
    assert_same_model,
    commit_and_repro,
    copy_project,
    details,
    edit_params,
    headline,
    sh,
    write_seed_dataset,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the project (tracked and new files, plus the offline plot template) into a new
    git repo, add a tiny dataset with `dvc add`, and run `dvc repro` once."""
    repo = copy_project(tmp_path_factory.mktemp("e2e") / "repo")
    edit_params(repo / "params.yaml", datasets=["tiny"])
    write_seed_dataset(repo / "datasets" / "raw" / "tiny", {"train": 12, "test": 4})
    commit_and_repro(repo, "tiny", "project with a tiny dataset")
    return repo


def _truth_and_predictions(repo: Path, cell: str) -> tuple[list[str], list[str]]:
    """(true class, predicted class) of every test image, from the normalized test split and
    evaluate's predictions.jsonl."""
    from data_processing import schema

    test = schema.load(repo / "datasets/normalized/tiny/test.json")
    names = {c.id: c.name for c in test.categories}
    truth = {i.file_name: names[i.labels[0]] for i in test.images}
    lines = (repo / f"models/runs/{cell}/eval/predictions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    labels = sorted(names.values())
    return [truth[r["file"]] for r in rows], [labels[int(np.argmax(r["probs"]))] for r in rows]


def test_repro_writes_metrics_for_every_cell(repo: Path) -> None:
    from PIL import Image
    from sklearn.metrics import accuracy_score, f1_score

    for model in ("mlp", "cnn"):
        cell = f"tiny-{model}-quick"
        metrics = details(repo, cell)
        truth, predicted = _truth_and_predictions(repo, cell)
        assert len(truth) == 12  # 3 classes x 4 test images
        f1 = f1_score(truth, predicted, average="macro", zero_division=0)
        assert metrics["test"]["f1_macro"] == pytest.approx(f1, abs=1e-6)
        assert metrics["test"]["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
        assert metrics["profile"]["params"] > 0 and metrics["profile"]["size_mb"] > 0
        assert headline(repo, cell) == {  # what dvc exp show and metrics diff compare
            "accuracy": round(metrics["test"]["accuracy"], 4),
            "f1_macro": round(metrics["test"]["f1_macro"], 4),
            "ece": round(metrics["test"]["ece"], 4),
            "size_mb": metrics["profile"]["size_mb"],
        }
        profile = json.loads((repo / f"models/runs/{cell}/logs/profile.json").read_text())
        assert profile["infer_ms_b1"] > 0  # timings: logs/, not a DVC output
        confusion = json.loads((repo / f"models/plots/confusion/{cell}.json").read_text())
        pairs = Counter(zip(truth, predicted, strict=True))
        assert {(r["actual"], r["predicted"]): r["count"] for r in confusion} == pairs
        epochs = json.loads((repo / f"models/runs/{cell}/train/train.json").read_text())["epochs"]
        for kind in ("loss", "accuracy"):
            rows = (repo / f"models/plots/{kind}/{cell}.tsv").read_text().splitlines()
            assert rows[0] == "epoch\ttrain\tval" and len(rows) == epochs + 1
        per_class = json.loads((repo / f"models/plots/per_class/{cell}.json").read_text())
        assert sum(r["support"] for r in per_class) == 12
        for kind in ("failures", "curves"):
            with Image.open(repo / f"models/plots/{kind}/{cell}.png") as image:
                assert image.format == "PNG" and min(image.size) >= 100
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo, stdout_only=True))
    data = shown[""]["data"]  # "" is the workspace
    assert {"models/metrics/tiny-mlp-quick.json", "models/metrics/tiny-cnn-quick.json"} <= set(
        data
    )


def test_bundle_contents_and_lineage(repo: Path) -> None:
    pointer = json.loads((repo / "deployment/tiny/production.json").read_text())
    bundle = repo / pointer["bundle"]
    for name in (
        "model.keras",
        "model.onnx",
        "labels.json",
        "params.json",
        "metrics.json",
        "lineage.json",
        "calibration.json",
        "MODEL_CARD.md",
        "code/__main__.py",
        f"code/models/architectures/{pointer['model']}.py",
        "code/models/common/serving.py",
        "code/models/common/postprocess.py",
        "code/data_processing/images.py",
    ):
        assert (bundle / name).is_file(), name
    assert json.loads((bundle / "labels.json").read_text()) == ["bar", "column", "diagonal"]
    lineage = json.loads((bundle / "lineage.json").read_text())
    assert len(lineage["code_sha256"]) == 64 and lineage["seed"] == 42
    assert not (bundle / "saved_model").exists()  # reprovision savedmodel writes one
    assert lineage["data"]["datasets/raw/tiny"]  # md5 from dvc.lock
    assert lineage["data"]["datasets/shards/tiny"]  # the training cache it was trained on
    assert lineage["dataset_version"] == lineage["data"]["datasets/raw/tiny"]
    assert lineage["images"] == {"train": 30, "val": 6, "test": 12}
    card = (bundle / "MODEL_CARD.md").read_text()
    assert f"# Model card: tiny-{pointer['model']}-quick" in card and "## Limits" in card
    assert "| bar |" in card  # per-class metrics table
    assert lineage["packages"]["tensorflow"] == "2.21.0"


def test_deploy_test_passed(repo: Path) -> None:
    result = json.loads((repo / "deployment/tiny/deploy_test.json").read_text())["tiny"]
    result = result["deploy_test"]
    assert result["passed"] is True
    for backend in ("tf", "onnx"):
        checks = result[backend]
        assert checks["passed"] is True and checks["clean_imports"] is True
        assert checks["label_agreement"] == 1.0 and checks["tolerance_used"] <= 1.0
        assert checks["samples"] == 6 and checks["variants_ok"] is True


def test_second_repro_is_a_noop(repo: Path) -> None:
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage" not in out and "up to date" in out


def test_plots_render_offline(repo: Path) -> None:
    sh("dvc", "plots", "show", "-o", "plots_out", cwd=repo)
    html = (repo / "plots_out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    for kind in (
        "loss",
        "accuracy",
        "confusion",
        "per_class",
        "calibration",
        "calibrated",
        "failures",
    ):
        for model in ("mlp", "cnn"):
            assert f"models_plots_{kind}_tiny-{model}-quick_" in html, (kind, model)
    assert "models_plots_curves_" not in html  # the loss and accuracy charts, not a PNG copy
    first_chart = min(html.find(f"models_plots_{kind}_") for kind in ("loss", "confusion"))
    assert 0 < html.find("models_plots_compare_val_accuracy") < first_chart  # the overview first
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo, stdout_only=True))["data"]
    for metric in ("accuracy", "loss"):  # one chart per metric, every cell in it
        (chart,) = shown[f"models/plots/compare/val_{metric}.json"]
        rows = chart["content"]["data"]["values"]
        assert {r["cell"] for r in rows} == {"tiny-mlp-quick", "tiny-cnn-quick"}
        assert chart["content"]["encoding"]["color"]["field"] == "cell"
    for model in ("mlp", "cnn"):  # a reliability diagram per cell, the diagonal drawn
        (chart,) = shown[f"models/plots/calibration/tiny-{model}-quick.json"]
        rows = chart["content"]["data"]["values"]
        assert sum(r["count"] for r in rows) == 12  # every test image in one bin
        assert all(0 <= r["confidence"] <= 1 and 0 <= r["accuracy"] <= 1 for r in rows)
        assert chart["content"]["layer"][0]["mark"]["type"] == "rule"
        metrics = details(repo, f"tiny-{model}-quick")
        assert 0.0 <= metrics["test"]["ece"] <= metrics["test"]["mce"] <= 1.0


def test_experiment_shows_in_table_and_plots_diff(repo: Path) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline results", cwd=repo)
    sh("dvc", "exp", "run", "-n", "short", "-S", "hparams.quick.epochs=2", cwd=repo)
    table = sh("dvc", "exp", "show", "--csv", cwd=repo)
    header, *rows = table.strip().splitlines()
    assert "models/metrics/tiny-mlp-quick.json:f1_macro" in header
    assert "tiny.f1_macro" in header and "hparams.quick.epochs" in header
    assert any(row.startswith("short,") or ",short," in row for row in rows), table
    diff = json.loads(
        sh("dvc", "plots", "diff", "HEAD", "short", "--json", cwd=repo, stdout_only=True)
    )
    ids = set(diff["data"])
    assert {
        "models/plots/confusion/tiny-cnn-quick.json",
        "models/plots/loss/tiny-mlp-quick.tsv",
    } <= ids
    assert any(i.endswith("failures/tiny-mlp-quick.png") for i in ids)
    confusion = diff["data"]["models/plots/confusion/tiny-cnn-quick.json"][0]
    assert set(confusion["revisions"]) == {"HEAD", "short"}


def test_keep_commits_the_experiment_with_its_metrics(repo: Path) -> None:
    out = sh(str(BIN / "python"), "-m", "models.keep", "short", cwd=repo)
    assert "Keep experiment short: tiny-" in out and "f1_macro=" in out, out
    log = sh("git", "log", "-1", "--format=%s", cwd=repo)
    assert log.startswith("Keep experiment short: tiny-") and "f1_macro=" in log
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["hparams"]["quick"]["epochs"] == 2  # the experiment's params, committed
    assert sh("git", "status", "--porcelain", "--untracked-files=no", cwd=repo).strip() == ""


def test_shared_through_a_dvc_remote_and_a_fresh_clone(repo: Path, tmp_path: Path) -> None:
    store, origin, clone = tmp_path / "store", tmp_path / "origin.git", tmp_path / "clone"
    sh("dvc", "remote", "add", "--local", "-d", "store", str(store), cwd=repo)
    sh("dvc", "push", cwd=repo)
    sh("git", "init", "-q", "--bare", str(origin), cwd=repo)
    sh("git", "remote", "add", "origin", str(origin), cwd=repo)
    sh("git", "push", "-q", "origin", "HEAD:refs/heads/main", cwd=repo)
    sh("dvc", "exp", "push", "origin", "short", cwd=repo)
    sh("git", "clone", "-q", "-b", "main", str(origin), str(clone), cwd=tmp_path)
    sh("dvc", "remote", "add", "--local", "-d", "store", str(store), cwd=clone)
    sh("dvc", "pull", cwd=clone)
    out = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in out and "up to date" in out  # a fresh clone is a no-op
    sh("dvc", "exp", "pull", "origin", "short", cwd=clone)
    assert "short" in sh("dvc", "exp", "list", "--all-commits", "--name-only", cwd=clone)


def test_bundle_loads_without_the_models_sources(repo: Path, tmp_path: Path) -> None:
    pointer = json.loads((repo / "deployment/tiny/production.json").read_text())
    project = tmp_path / "project"  # the repo without its models/ and data_processing/ code
    shutil.copytree(repo / "deployment", project / "deployment")
    shutil.copytree(repo / pointer["bundle"], project / "bundle")
    image = sorted((repo / "datasets/raw/tiny/test").glob("*.png"))[0]
    script = (
        "import json, sys; from pathlib import Path; "
        "from deployment.server.bundle import load_bundle; "
        "b = load_bundle('bundle'); "
        "p = b.predictor.predict(b.predictor.prepare(Path(sys.argv[1]).read_bytes())[None]); "
        "print(json.dumps([sys.modules['models'].__file__, b.labels, p[0].tolist()]))"
    )
    out = sh(str(BIN / "python"), "-c", script, str(image), cwd=project)
    origin, labels, probs = json.loads(out.strip().splitlines()[-1])
    assert origin.startswith(str(project / "bundle" / "code"))
    assert labels == ["bar", "column", "diagonal"]
    # evaluate's probabilities for that file, as promoted with the bundle (the workspace's
    # models/runs/ may hold a later experiment that did not beat production)
    samples = json.loads((project / "bundle/eval/samples.json").read_text())["images"]
    reference = next(s["probs"] for s in samples if s["file_name"] == f"test/{image.name}")
    assert_same_model(reference, probs)


def test_deploy_test_catches_a_tampered_bundle(repo: Path, tmp_path: Path) -> None:
    pointer = json.loads((repo / "deployment/tiny/production.json").read_text())
    bundle = tmp_path / "bundle"
    shutil.copytree(repo / pointer["bundle"], bundle)
    labels = json.loads((bundle / "labels.json").read_text())
    (bundle / "labels.json").write_text(json.dumps(labels[::-1]))  # wrong label order
    (tmp_path / "pointer.json").write_text(json.dumps({**pointer, "bundle": str(bundle)}))
    proc = subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "deployment.release.deploy_test",
            str(tmp_path / "pointer.json"),
            str(tmp_path / "result.json"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    result = json.loads((tmp_path / "result.json").read_text())["tiny"]["deploy_test"]
    assert result["passed"] is False
    assert result["tf"]["labels_match"] is False and result["onnx"]["labels_match"] is False


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
    before = details(repo, "tiny-mlp-quick")
    sh("dvc", "repro", "-f", "-s", "train@tiny-mlp-quick", cwd=repo)
    out = sh("dvc", "repro", "-f", "-s", "evaluate@tiny-mlp-quick", cwd=repo)
    assert "Running stage 'evaluate@tiny-mlp-quick'" in out
    after = details(repo, "tiny-mlp-quick")
    assert after == before
