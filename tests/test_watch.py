"""The registry and the continuous-training loop, end to end, in a temporary copy of the repo.

One cell (tiny-mlp-quick). `dvc repro` puts a first model in production; the GTO registry
tags it; a real server serves the pointer; feedback is posted over HTTP; `deployment.release.watch`
snapshots it, runs `dvc exp run` (feedback joins the train split), select promotes the
retrained model, and the server hot-reloads it while two clients keep sending requests,
none of which fails. Rollback then brings the first version back, in the registry too.
"""

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    commit_and_repro,
    copy_project,
    edit_params,
    sh,
    stop_process,
    write_seed_dataset,
)
from servers import Server, call, png, start_watching

from data_processing.add_dataset import add_artifact

pytestmark = pytest.mark.slow
CELL = "tiny-mlp-quick"
N_FEEDBACK = 4
LABELS = ("bar", "column", "diagonal")


def pointer(repo: Path) -> dict:
    return json.loads((repo / "deployment/tiny/production.json").read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("watch") / "repo", models=("mlp",))
    edit_params(
        repo / "params.yaml",
        datasets=["tiny"],
        feedback={"dataset": "tiny", "min_records": N_FEEDBACK},
        select={"margin": -1.0},  # any passing retrain replaces production
    )
    write_seed_dataset(repo / "datasets/raw/tiny", {"train": 12, "test": 4})
    add_artifact("tiny", repo / "dvc.yaml")  # what reprovision add-dataset declares
    commit_and_repro(repo, "tiny", "project with a tiny dataset")
    return repo


def test_registry_says_what_to_commit_then_tags(repo: Path) -> None:
    out = sh(sys.executable, "-m", "deployment.release.registry", cwd=repo)
    assert "dvc.lock" in out and "is not committed, so there is no commit to tag yet" in out, out
    (command,) = [line.strip() for line in out.splitlines() if line.strip().startswith("git add")]
    assert "vc.lock" not in command.replace("dvc.lock", "")  # every path whole
    sh("bash", "-c", command, cwd=repo)  # the printed command, as printed
    assert sh("git", "status", "--porcelain", "dvc.lock", "deployment", cwd=repo) == ""
    out = sh(sys.executable, "-m", "deployment.release.registry", "tiny", cwd=repo)
    assert "registered tiny-classifier@v0.0.1" in out and "v0.0.1 is now prod" in out, out
    assert "already prod" in sh(sys.executable, "-m", "deployment.release.registry", cwd=repo)
    get = ["dvc", "artifacts", "get", ".", "tiny-classifier", "--stage", "prod", "-o", "fetched"]
    sh(*get, cwd=repo)
    fetched = hashlib.sha256((repo / "fetched/model.keras").read_bytes()).hexdigest()
    assert fetched == pointer(repo)["sha256"]


@pytest.fixture(scope="module")
def server(repo: Path):
    srv = start_watching(repo)
    yield srv
    stop_process(srv.proc, timeout=15)


def clients(srv: Server, stop: threading.Event, seen: list) -> list[threading.Thread]:
    def run() -> None:
        image = png(2, seed=99)
        while not stop.is_set():
            status, body = call(srv, "POST", "/predict", image, {"Content-Type": "image/png"})
            seen.append((status, body.get("model_version") if isinstance(body, dict) else None))

    threads = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    return threads


def wait_for_version(srv: Server, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while call(srv, "GET", "/v2")[1]["model_version"] != version:
        assert time.monotonic() < deadline, srv.logged()[-3000:]
        time.sleep(0.2)


def test_feedback_retrains_promotes_and_hot_reloads(repo: Path, server: Server) -> None:
    first = pointer(repo)
    for i in range(N_FEEDBACK):  # new images, labelled by a person through the API
        label = i % len(LABELS)
        status, body = call(
            server, "POST", "/predict", png(label, seed=1000 + i), {"Content-Type": "image/png"}
        )
        assert status == 200 and body["model_version"] == first["version"]
        answer = {"request_id": body["request_id"], "true_label": LABELS[label]}
        assert call(server, "POST", "/feedback", answer)[0] == 200
        accept = {"decision": "accept"}  # a reviewer on 127.0.0.1: only accepted records train
        assert call(server, "POST", f"/review/{body['request_id']}", accept)[0] == 200
    stop, seen = threading.Event(), []
    threads = clients(server, stop, seen)
    try:
        out = sh(sys.executable, "-m", "deployment.release.watch", "--once", cwd=repo)
        assert f"{N_FEEDBACK} new accepted feedback records" in out and "promoted" in out, out
        second = pointer(repo)
        assert second["version"] != first["version"]
        assert second["history"][0]["version"] == first["version"]
        wait_for_version(server, second["version"])
        time.sleep(1)  # requests on the new model too
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    statuses = [status for status, _ in seen]
    assert statuses and set(statuses) == {200}, f"failed requests: {statuses}"
    versions = [v for _, v in seen]
    assert versions[0] == first["version"] and versions[-1] == second["version"]
    train = json.loads((repo / "datasets/normalized/tiny/train.json").read_text())
    merged = [i for i in train["images"] if i["file_name"].startswith("../feedback/")]
    assert len(merged) == N_FEEDBACK
    assert (repo / "datasets/raw/feedback.dvc").is_file()
    exps = sh("dvc", "exp", "list", "--name-only", cwd=repo, stdout_only=True)
    assert json.loads((repo / "deployment/watch.json").read_text())["last"]["experiment"] in exps


def test_watch_with_nothing_new_does_nothing(repo: Path) -> None:
    state = (repo / "deployment/watch.json").read_bytes()
    out = sh(sys.executable, "-m", "deployment.release.watch", "--once", cwd=repo)
    assert "retraining" not in out
    assert (repo / "deployment/watch.json").read_bytes() == state


def test_rollback_restores_the_previous_version_everywhere(repo: Path, server: Server) -> None:
    current, previous = pointer(repo), pointer(repo)["history"][0]
    out = sh(sys.executable, "-m", "deployment.release.rollback", "tiny", cwd=repo)
    assert f"{current['version']} -> {previous['name']} {previous['version']}" in out, out
    assert "v0.0.1 is already prod" in out  # the registry never moved off the first version
    wait_for_version(server, previous["version"])
    assert pointer(repo)["rejected"] == [current["sha256"]]
