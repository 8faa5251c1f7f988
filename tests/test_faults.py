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
from conftest import BIN, copy_project, details, edit_params, sh, write_seed_dataset

N_FEEDBACK = 4  # labelled records the watch waits for (params feedback.min_records)

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
    """Each cell's test metrics (timings are not in them: they vary from run to run)."""
    return {c: details(repo, c)["test"] for c in CELLS}


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
                    if (repo / "models/runs" / name / "logs/live").exists():  # dvclive began
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


def _post_feedback(url: str, worker: int, count: int) -> None:
    """One client: /predict a new image, then its /feedback, `count` times."""
    import io
    import urllib.request

    import numpy as np
    from PIL import Image

    for i in range(count):
        out = io.BytesIO()
        pixels = np.random.default_rng([worker, i]).integers(0, 255, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(out, "PNG")
        request = urllib.request.Request(
            f"{url}/predict", out.getvalue(), {"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        body = json.dumps({"request_id": answer["request_id"], "true_label": answer["label"]})
        request = urllib.request.Request(
            f"{url}/feedback", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200


def test_8_processes_post_500_feedback_records_each(tmp_path: Path) -> None:
    """4,000 labelled records through the real server from 8 client processes at once: all
    4,000 rows, no duplicate, every fifth (in arrival order) in the test split."""
    import multiprocessing
    import sqlite3

    from conftest import build_bundle, stop_process
    from servers import start

    bundle = build_bundle(tmp_path / "project")
    feedback = tmp_path / "feedback"
    server = start(tmp_path, "--bundle", str(bundle), feedback=feedback)
    url, log = server.url, server.log
    try:
        ctx = multiprocessing.get_context("spawn")
        clients = [ctx.Process(target=_post_feedback, args=(url, w, 500)) for w in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=600)
        assert [c.exitcode for c in clients] == [0] * 8, log.read_text()[-3000:]
    finally:
        stop_process(server.proc)
    with sqlite3.connect(feedback / "feedback.sqlite3") as db:
        rows = db.execute("SELECT seq, request_id, split FROM feedback ORDER BY seq").fetchall()
    assert len(rows) == 4000 and len({r[1] for r in rows}) == 4000
    assert [r[0] for r in rows] == list(range(1, 4001))
    assert [r[0] for r in rows if r[2] == "test"] == list(range(1, 4001, 5))


def test_watch_killed_mid_cycle_loses_and_doubles_no_feedback(tmp_path: Path) -> None:
    """SIGKILL the watch while its `dvc exp run` trains on new feedback; the next check runs
    the cycle again and completes, and the normalized train split holds each feedback record
    exactly once."""
    import sys

    from conftest import commit_and_repro, stop_process
    from servers import call, png, start_watching

    repo = copy_project(tmp_path / "repo", models=("mlp",))
    edit_params(
        repo / "params.yaml",
        datasets=["tiny"],
        feedback={"dataset": "tiny", "min_records": N_FEEDBACK},
        select={"margin": -1.0},
    )
    write_seed_dataset(repo / "datasets/raw/tiny", {"train": 12, "test": 4})
    commit_and_repro(repo, "tiny", "project with a tiny dataset")
    server = start_watching(repo)
    try:
        for i in range(N_FEEDBACK):
            image = png(i % 3, seed=500 + i)
            status, body = call(server, "POST", "/predict", image, {"Content-Type": "image/png"})
            assert status == 200
            answer = {"request_id": body["request_id"], "true_label": body["label"]}
            assert call(server, "POST", "/feedback", answer)[0] == 200
            accept = {"decision": "accept"}  # only accepted records train (review.py)
            assert call(server, "POST", f"/review/{body['request_id']}", accept)[0] == 200
    finally:
        stop_process(server.proc, timeout=15)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    log = tmp_path / "watch.log"
    with open(log, "w") as out:
        watch = subprocess.Popen(
            [sys.executable, "-m", "deployment.release.watch", "--once"],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while "Running stage 'train@" not in log.read_text():
        assert watch.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.killpg(watch.pid, signal.SIGKILL)  # the watch, dvc exp run and the stage
    watch.wait(timeout=30)
    assert not (repo / "deployment/watch.json").is_file() or "last" not in json.loads(
        (repo / "deployment/watch.json").read_text()
    )
    out = sh(sys.executable, "-m", "deployment.release.watch", "--once", cwd=repo)
    assert f"{N_FEEDBACK} new accepted feedback records" in out, out
    train = json.loads((repo / "datasets/normalized/tiny/train.json").read_text())
    merged = [i["file_name"] for i in train["images"] if i["file_name"].startswith("../feedback/")]
    assert len(merged) == len(set(merged)) == N_FEEDBACK
    assert json.loads((repo / "deployment/watch.json").read_text())["records"] == N_FEEDBACK
    state = (repo / "deployment/watch.json").read_bytes()
    again = sh(sys.executable, "-m", "deployment.release.watch", "--once", cwd=repo)
    assert "retraining" not in again  # nothing is used twice
    assert (repo / "deployment/watch.json").read_bytes() == state


def test_soak_60s_at_c32_with_10_hot_reloads(releases, tmp_path: Path) -> None:  # noqa: F811
    """wrk at 32 connections for 60 s on v2 infer while the pointer flips between two
    releases 10 times: no non-2xx answer, no socket error, every reload swapped in, and the
    server's RSS after warm-up grows less than 10%."""
    import base64
    import threading

    from servers import CELL, POINTER, metric, png, start, stop, write_pointer

    from bench.serve import wrk
    from bench.server_memory import PeakRss

    root, a, b = releases
    write_pointer(root, a.pointer())
    pointer = str(root / POINTER)
    srv = start(root, "--pointer", pointer, "--watch-interval", "0.2", name="soak")
    try:
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
        tensor["data"] = [base64.b64encode(png(1)).decode()]
        body = tmp_path / "body.json"
        body.write_text(json.dumps({"inputs": [tensor]}))
        url = f"{srv.url}/v2/models/{CELL}/infer"
        wrk(url, 32, 5, body)  # warm-up: threads, arenas, caches
        before = psutil.Process(srv.proc.pid).memory_info().rss

        def flip() -> None:
            for i in range(10):
                time.sleep(5)
                write_pointer(root, (b if i % 2 == 0 else a).pointer())

        flipper = threading.Thread(target=flip)
        with PeakRss(srv.proc.pid, interval=0.1) as peak:
            flipper.start()
            result = wrk(url, 32, 60, body)
            flipper.join()
        errors = sum(result["errors"][k] for k in ("connect", "read", "write", "timeout"))
        assert (result["non_2xx"], errors) == (0, 0), result
        assert result["requests"] > 1000, result
        deadline = time.monotonic() + 30
        while metric(srv, "serve_model_reloads_total") < 10:
            assert time.monotonic() < deadline, srv.logged()[-3000:]
            time.sleep(0.2)
        growth = peak.peak / before - 1
        print(f"soak: {result['requests']} requests, RSS {before >> 20} -> {peak.peak >> 20} MiB")
        assert growth < 0.10, (before, peak.peak)
    finally:
        stop(srv)
