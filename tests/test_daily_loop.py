"""The loop users live in, on two datasets at once: the default digits and a generated one.

One real `dvc repro` of a project with both; then, as a user would: each dataset gets its own
production model, registry artifact and served model, and promoting or rolling back one
leaves the other alone; the experiments table make run prints fits 200 columns, also with an
experiment queued; and a fresh clone with no remote and no run shows the committed metrics,
runs an experiment on one cell and diffs its metrics and plots against HEAD.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    BIN,
    commit_and_repro,
    copy_project,
    edit_params,
    sh,
    tool_env,
    write_seed_dataset,
)

from data_processing.add_dataset import add_artifact
from models import leaderboard

pytestmark = pytest.mark.loop
DATASETS = ["digits", "tiny"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("loop") / "repo", models=("mlp",))
    edit_params(repo / "params.yaml", datasets=DATASETS)
    write_seed_dataset(repo / "datasets/raw/tiny", {"train": 12, "test": 4})
    add_artifact("tiny", repo / "dvc.yaml")
    commit_and_repro(repo, "tiny", "digits and a tiny dataset")
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "results", cwd=repo)
    return repo


def _pointer(repo: Path, dataset: str) -> dict:
    return json.loads((repo / f"deployment/{dataset}/production.json").read_text())


def test_two_datasets_two_production_models_and_artifacts(repo: Path) -> None:
    digits, tiny = _pointer(repo, "digits"), _pointer(repo, "tiny")
    assert (digits["name"], tiny["name"]) == ("digits-mlp-quick", "tiny-mlp-quick")
    for dataset in DATASETS:
        best = json.loads((repo / f"deployment/{dataset}/best.json").read_text())[dataset]
        assert best["best"] == "mlp-quick" and best["production"].startswith("mlp-quick@")
    out = sh(sys.executable, "-m", "deployment.release.registry", cwd=repo)
    assert (
        "registered digits-classifier@v0.0.1" in out and "registered tiny-classifier@v0.0.1" in out
    )
    tags = sh("git", "tag", "-l", cwd=repo).split()
    assert {"digits-classifier@v0.0.1", "tiny-classifier@v0.0.1"} <= set(tags)


def test_one_server_serves_both_and_each_reloads_alone(repo: Path) -> None:
    from servers import call, png, start_watching, stop

    def version(dataset: str, expected: str, timeout: float = 60) -> bool:
        """Wait until the server serves `expected` as `dataset`'s model."""
        deadline = time.monotonic() + timeout
        while call(srv, "GET", f"/v2/models/{dataset}")[1]["versions"] != [expected]:
            assert time.monotonic() < deadline, srv.logged()[-3000:]
            time.sleep(0.2)
        return True

    srv = start_watching(repo)
    try:
        index = call(srv, "POST", "/v2/repository/index")[1]
        assert {m["name"] for m in index} == set(DATASETS)
        digits, tiny = _pointer(repo, "digits"), _pointer(repo, "tiny")
        meta = call(srv, "GET", "/v2/models/tiny")[1]
        assert meta["parameters"]["labels"] == ["bar", "column", "diagonal"]
        assert call(srv, "GET", "/v2/models/digits")[1]["parameters"]["labels"][0] == "0"
        assert call(srv, "GET", "/v2/models/tiny-mlp-quick")[1]["versions"] == [tiny["version"]]
        status, answer = call(srv, "POST", "/predict", png(1), {"Content-Type": "image/png"})
        assert status == 400 and "?model=NAME, one of ['digits', 'tiny']" in answer["error"]
        status, answer = call(
            srv, "POST", "/predict?model=tiny", png(1), {"Content-Type": "image/png"}
        )
        assert status == 200 and answer["label"] in ("bar", "column", "diagonal")
        # a new tiny model: its cell alone retrains and its gate promotes it
        edit_params(
            repo / "params.yaml", hparams={"quick": {"epochs": 5}}, select={"margin": -1.0}
        )
        sh("dvc", "repro", "select@tiny", cwd=repo)
        new = _pointer(repo, "tiny")
        assert new["version"] != tiny["version"] and _pointer(repo, "digits") == digits
        version("tiny", new["version"])
        assert version("digits", digits["version"], timeout=0)  # digits never moved
        sh(sys.executable, "-m", "deployment.release.rollback", "tiny", cwd=repo)
        assert _pointer(repo, "tiny")["version"] == tiny["version"]
        assert _pointer(repo, "digits") == digits
        version("tiny", tiny["version"])
    finally:
        stop(srv)
        sh("git", "checkout", "--", "params.yaml", cwd=repo)


def _table(repo: Path) -> str:
    """The experiments table make run prints, as a 200-column terminal shows it."""
    command = leaderboard.table_command(DATASETS).replace(
        "dvc exp show", "dvc exp show --no-pager"
    )
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=repo,
        env=tool_env(COLUMNS="200", LINES="50", TERM="xterm"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", proc.stdout)


def test_the_experiments_table_fits_200_columns(repo: Path) -> None:
    sh(
        "dvc",
        "exp",
        "run",
        "-n",
        "short",
        "-S",
        "hparams.quick.epochs=3",
        "export@tiny-mlp-quick",
        cwd=repo,
    )
    shown = _table(repo)
    assert "digits.f1_macro" in shown and "tiny.best" in shown and "hparams.quick.epochs" in shown
    assert "…" not in shown, shown
    assert max(map(len, shown.splitlines())) <= 200
    sh("dvc", "exp", "run", "--queue", "-n", "later", "-S", "hparams.quick.batch_size=4", cwd=repo)
    queued = _table(repo)
    assert "later" in queued and "Queued" in queued and "hparams.quick.batch_size" in queued
    assert "…" not in queued, queued
    sh("dvc", "queue", "remove", "--all", cwd=repo)


def test_a_fresh_clone_shows_and_diffs_metrics_without_a_remote(
    repo: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=clone, stdout_only=True))
    # what HEAD holds: the tests before may have left other results in the workspace
    head = "HEAD:models/metrics/digits-mlp-quick.json"
    committed = json.loads(sh("git", "show", head, cwd=repo, stdout_only=True))
    assert shown[""]["data"]["models/metrics/digits-mlp-quick.json"]["data"] == committed
    cell = "export@digits-mlp-quick"
    sh("dvc", "exp", "run", "-S", "hparams.quick.epochs=2", cell, cwd=clone)
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=clone, stdout_only=True))
    changed = diff["models/metrics/digits-mlp-quick.json"]
    assert changed["f1_macro"]["old"] == committed["f1_macro"]
    plots = json.loads(sh("dvc", "plots", "diff", "HEAD", "--json", cwd=clone, stdout_only=True))
    (loss,) = plots["data"]["models/plots/loss/digits-mlp-quick.tsv"]
    assert set(loss["revisions"]) == {"HEAD", "workspace"}
    rows = loss["content"]["data"]["values"]
    assert {r["rev"] for r in rows} == {"HEAD", "workspace"}
    assert max(int(r["epoch"]) for r in rows if r["rev"] == "workspace") == 2


def test_a_dataset_named_like_a_cell_is_refused(repo: Path, tmp_path: Path) -> None:
    other = write_seed_dataset(tmp_path / "other", {"train": 4, "test": 2})
    cmd = [str(BIN / "python"), "-m", "data_processing.add_dataset", str(other)]
    proc = subprocess.run(
        [*cmd, "--name", "digits-mlp-quick"], cwd=repo, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'digits-mlp-quick', the name of a cell of dataset 'digits'" in proc.stderr
    assert not (repo / "datasets/raw/digits-mlp-quick").exists()
