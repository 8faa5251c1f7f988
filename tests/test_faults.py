"""Fault injection on the real pipeline: `dvc repro` killed with SIGKILL in the middle of a
train stage, then run again, ends with the metrics an uninterrupted run gives.

Marked `fault`: .ci/run runs these after `make test` (`make test-fault`).
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import BIN, copy_project, edit_params, sh, write_seed_dataset

pytestmark = [pytest.mark.slow, pytest.mark.fault]
CELLS = ("tiny-cnn-quick", "tiny-mlp-quick")


def project(root: Path) -> Path:
    repo = copy_project(root / "repo")
    edit_params(repo / "params.yaml", datasets=["tiny"])
    write_seed_dataset(repo / "datasets/raw/tiny", {"train": 12, "test": 4})
    sh("dvc", "add", "-q", "datasets/raw/tiny", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "project with a tiny dataset", cwd=repo)
    return repo


def metrics(repo: Path) -> dict:
    """Each cell's test metrics (timings vary from run to run; the rest must not)."""
    return {c: json.loads((repo / f"models/metrics/{c}.json").read_text())["test"] for c in CELLS}


def test_repro_killed_in_a_train_stage_completes_with_the_same_metrics(tmp_path: Path) -> None:
    reference = project(tmp_path / "uninterrupted")
    sh("dvc", "repro", cwd=reference)
    repo = project(tmp_path / "killed")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    log = tmp_path / "repro.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["dvc", "repro"], cwd=repo, env=env, stdout=out, stderr=out, start_new_session=True
        )
    deadline, cell = time.monotonic() + 300, None
    while cell is None:  # a train stage's process, once its training has begun
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                args = child.cmdline()
                if args[1:3] == ["-m", "models.train"]:
                    name = "-".join(args[3:6])
                    if (repo / "models/runs" / name / "train/live").exists():
                        cell = name
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's python, no cleanup
    proc.wait(timeout=30)
    assert f"Running stage 'evaluate@{cell}'" not in log.read_text()  # killed mid-training
    out = sh("dvc", "repro", cwd=repo)
    assert "Running stage 'train@" in out
    assert metrics(repo) == metrics(reference)
    assert "up to date" in sh("dvc", "repro", cwd=repo)  # and it is complete
