"""Hot reload, graceful shutdown and feedback-as-data on the real server over real HTTP.

Two tiny bundles of one cell (tiny-mlp-quick, base.seed 0 and 1: different weights, so a
different sha256) are built once through the real stage modules, two projects side by side
so the two trainings overlap. `python -m deployment.server.serve --pointer ...` serves them in a
subprocess; the tests rewrite the pointer as deployment/release/select.py would.
"""

import base64
import hashlib
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    free_port,
    wait_ready,
)
from servers import (
    CELL,
    POINTER,
    READY_TIMEOUT,
    Server,
    call,
    metric,
    png,
    start,
    stop,
    version,
    write_pointer,
)

pytestmark = pytest.mark.slow
RELOAD_TIMEOUT = 30  # seconds: for the new version (or a failure) to show


@pytest.fixture(scope="module")
def server(releases):
    """A server on the pointer, first naming release a; polls the pointer every 0.2 s."""
    root, a, _ = releases
    write_pointer(root, a.pointer())
    pointer = str(root / POINTER)
    flags = ("--pointer", pointer, "--watch-interval", "0.2", "--drain-seconds", "0.2")
    srv = start(root, *flags, name="watch")
    yield srv
    stop(srv)


def _load(srv: Server, stop: threading.Event, seen: list, worker: int) -> None:
    """Requests until `stop` (at most 2,000 or 60 s): (worker, status, version, probs)."""
    image = png(1, seed=0)
    data = [base64.b64encode(image).decode()]
    infer = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": data}]}
    deadline = time.monotonic() + 60
    for i in range(2000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        if (i + worker) % 2:
            status, body = call(srv, "POST", "/predict", image, {"Content-Type": "image/png"})
            top = sorted(body["top_k"], key=lambda t: t["index"]) if status == 200 else []
            probs = [t["score"] for t in top]  # all K classes: TOP_K 5 > 3
        else:
            status, body = call(srv, "POST", f"/v2/models/{CELL}/infer", infer)
            probs = body["outputs"][0]["data"] if status == 200 else []
        got = body.get("model_version") if isinstance(body, dict) else None
        seen.append((worker, status, got, probs, time.monotonic()))


def test_hot_reload_under_load_fails_no_request(server: Server, releases) -> None:
    root, a, b = releases
    assert version(server) == a.sha256[:12]
    stop, seen = threading.Event(), []
    workers = [
        threading.Thread(target=_load, args=(server, stop, seen, w), daemon=True) for w in (0, 1)
    ]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        swapped_at = time.monotonic()
        write_pointer(root, b.pointer())
        deadline = swapped_at + RELOAD_TIMEOUT
        while not any(s[2] == b.sha256[:12] for s in seen[-4:]):
            assert time.monotonic() < deadline, server.logged()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # more requests on the new model
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=35)
    failed = [s[:3] for s in seen if s[1] != 200]
    assert not failed, failed
    versions = {s[2] for s in seen}
    assert versions == {a.sha256[:12], b.sha256[:12]}
    for w in (0, 1):  # per worker: a, a, ..., b, b (a request pinned to a may end after b)
        order = [s[2] for s in seen if s[0] == w]
        assert order == sorted(order, key=lambda v: v == b.sha256[:12]), order
    # model_version names the model that really answered: its probabilities are that model's
    reference = {}
    for _, _, v, probs, _ in seen:
        reference.setdefault(v, probs)
        assert np.allclose(probs, reference[v], atol=1e-5), (v, probs, reference[v])
    assert not np.allclose(reference[a.sha256[:12]], reference[b.sha256[:12]], atol=1e-4)
    assert metric(server, "serve_model_reloads_total") == 1.0
    text = call(server, "GET", "/metrics")[1].decode()
    assert f'serve_model_info{{name="{CELL}",version="{b.sha256[:12]}"}} 1.0' in text
    assert a.sha256[:12] not in text
    loaded = re.findall(r"loaded and checked in ([\d.]+) s: (.*)\)", server.logged())
    assert len(loaded) == 2 and "eval images match" in loaded[1][1], loaded
    first_b = min(s[4] for s in seen if s[2] == b.sha256[:12])
    during = sum(1 for s in seen if swapped_at <= s[4] <= first_b)
    print(
        f"\nreload: {len(seen)} requests, 0 failed; load+check {loaded[1][0]} s; "
        f"{during} requests answered between the pointer write and the first new-model "
        f"answer ({first_b - swapped_at:.2f} s)"
    )


@pytest.mark.parametrize(
    "case, reason",
    [
        ("no model.keras", "missing"),
        ("wrong sha256", "sha256"),
        ("eval predictions of another model", "self_check"),
        ("pointer not JSON", "pointer"),
    ],
)
def test_broken_candidate_keeps_the_old_model(server: Server, releases, case, reason) -> None:
    root, a, b = releases
    serving = version(server)
    other = a if serving == b.sha256[:12] else b  # a real model, not the one serving
    if case == "no model.keras":
        broken = root / "releases/broken/bundle"
        if not broken.exists():
            shutil.copytree(root / other.bundle, broken)
            (broken / "model.keras").unlink()
        pointer = other.pointer(bundle="releases/broken/bundle")
    elif case == "wrong sha256":
        pointer = other.pointer(sha256="0" * 64)
    elif case == "eval predictions of another model":
        own = a if other is b else b
        pointer = other.pointer(eval_samples=own.eval_samples)
    else:
        pointer = '{"bundle": "releases/'  # as a writer that is not atomic may leave it
    name = f'serve_model_load_failures_total{{reason="{reason}"}}'
    before = metric(server, name)
    write_pointer(root, pointer)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while metric(server, name) == before:
        assert time.monotonic() < deadline, server.logged()[-3000:]
        time.sleep(0.1)
    assert metric(server, name) == before + 1
    assert version(server) == serving
    status, body = call(server, "POST", "/predict", png(2, seed=0), {"Content-Type": "image/png"})
    assert status == 200 and body["model_version"] == serving
    assert f"serve: kept {serving}: {reason}" in server.logged()


def test_feedback_becomes_a_seed_dataset(server: Server) -> None:
    from data_processing.sources import seed
    from deployment.release.feedback_export import export

    uploads, stored = [png(0, seed=7), png(2, seed=8)], []
    for data, label in zip(uploads, ("bar", "diagonal"), strict=True):
        status, answer = call(server, "POST", "/predict", data, {"Content-Type": "image/png"})
        assert status == 200
        rid = answer["request_id"]
        body = {"request_id": rid, "true_label": label}
        status, fb = call(server, "POST", "/feedback", body)
        assert status == 200 and fb["model_version"] == answer["model_version"]
        record = fb["record"]
        assert record["model_version"] == answer["model_version"]
        assert record["predicted_label"] == answer["label"] and record["true_label"] == label
        assert record["predicted_at"] > 0
        assert call(server, "POST", "/feedback", body) == (status, fb)  # idempotent
        status, _ = call(server, "POST", f"/review/{rid}", {"decision": "accept"})
        assert status == 200  # only accepted records are exported (review.py)
        stored.append((rid, record["split"], label))
        assert (server.feedback / record["image"]).read_bytes() == data  # the upload itself
    assert [s[1] for s in stored] == ["test", "train"]  # record 0 test, then 1-4 train
    assert export(server.feedback) == 2  # what the watch does before each snapshot
    for rid, split, label in stored:
        assert (server.feedback / split / f"{rid}.png").is_file()
        csv = (server.feedback / split / "groundtruth.csv").read_text()
        assert csv == f"filename,label\n{rid}.png,{label}\n"
    assert not list(server.feedback.rglob(".tmp-*"))
    parsed = seed.parse(server.feedback)
    for rid, split, label in stored:
        dataset = parsed[split]
        names = {c.id: c.name for c in dataset.categories}
        (image,) = dataset.images
        assert image.file_name == f"{split}/{rid}.png" and (image.width, image.height) == (8, 8)
        assert [names[i] for i in image.labels] == [label]


def test_sigterm_drains_then_exits_zero(releases) -> None:
    root, a, _ = releases
    srv = start(root, "--bundle", a.bundle, "--drain-seconds", "1", name="drain")
    try:
        image = png(0)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", str(len(image)))
        conn.endheaders()
        conn.send(image[:20])  # in flight: the server waits for the rest of the body
        time.sleep(0.5)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (ready := call(srv, "GET", "/v2/health/ready"))[0] != 503:
            assert time.monotonic() < deadline, srv.logged()[-3000:]
            time.sleep(0.05)
        assert ready[1] == {"ready": False, "model_version": a.sha256[:12]}
        assert call(srv, "GET", "/v2/health/live")[0] == 200
        status, body = call(srv, "POST", "/predict", image, {"Content-Type": "image/png"})
        assert status == 503 and body["error"] == "shutting down", body
        assert srv.proc.poll() is None  # still draining: the request above is in flight
        conn.send(image[20:])
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200 and answer["model_version"] == a.sha256[:12], answer
        conn.close()
        assert srv.proc.wait(timeout=20) == 0, srv.logged()[-3000:]
        assert call(srv, "GET", "/v2/health/live")[0] == 0  # the listener is closed
        assert "SIGTERM: draining" in srv.logged() and "Traceback" not in srv.logged()
    finally:
        stop(srv)


def test_feedback_store_recovers_after_a_crash(tmp_path: Path) -> None:
    """A restart keeps every committed record, and a request_id in the database can still be
    relabelled; an image written without its row (a crash between the two) is used again,
    not stored twice, when that feedback comes again (no server: the store on its own)."""
    from deployment.server.feedback_store import FeedbackStore

    store = FeedbackStore(tmp_path, capacity=1)
    rids = [f"{i:032x}" for i in (1, 2, 3)]
    predicted = {"model_name": CELL, "model_version": "v", "predicted_label": "bar", "score": 1}
    for rid in rids[:2]:
        store.remember(rid, png(), predicted, ["bar", "column"])
        store.record({"request_id": rid, "true_label": "bar"})
    store.remember(rids[2], png(0, seed=3), predicted, ["bar", "column"])  # forgets rids[1]
    crashed = tmp_path / "images" / f"{hashlib.sha256(png(0, seed=3)).hexdigest()}.png"
    crashed.write_bytes(png(0, seed=3))  # a crash after the image write, before the row
    store = FeedbackStore(tmp_path)
    record = store.record({"request_id": rids[1], "true_label": "column"})
    assert record["split"] == "train" and record["correct"] is False
    with pytest.raises(Exception, match="unknown label"):
        store.record({"request_id": rids[1], "true_label": "diagonal"})
    with pytest.raises(Exception, match="unknown request_id"):
        store.record({"request_id": rids[2], "true_label": "bar"})  # not remembered now
    store.remember(rids[2], png(0, seed=3), predicted, ["bar", "column"])
    assert store.record({"request_id": rids[2], "true_label": "bar"})["image"] == (
        f"images/{crashed.name}"
    )
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        {f"{hashlib.sha256(png()).hexdigest()}.png", crashed.name}
    )


def test_self_check_of_probabilities() -> None:
    from deployment.server.reload import CandidateError, check_probabilities

    softmax, sigmoid = np.array([[0.2, 0.8]]), np.array([[0.9, 0.7]])
    check_probabilities(softmax, 2)
    check_probabilities(sigmoid, 2, multi_label=True)  # multi-label rows need not sum to 1
    for probs, k, multi in ((sigmoid, 2, False), (softmax, 3, False), (softmax * np.nan, 2, True)):
        with pytest.raises(CandidateError) as err:
            check_probabilities(probs, k, multi)
        assert err.value.reason == "self_check"


def test_a_watcher_stops_before_it_started(tmp_path: Path) -> None:
    """A server whose port is taken shuts down before its load thread starts the watcher:
    stopping it then is quiet (it raised "cannot join thread before it is started")."""
    from deployment.server.reload import PointerWatcher

    changes = []
    watcher = PointerWatcher(tmp_path / "production.json", 0.01, lambda: changes.append(1))
    watcher.stop()
    watcher.stop()  # twice, as a drain after a failed start may
    assert not watcher._thread.is_alive() and changes == []


def test_no_model_yet_serves_unready_then_loads_the_pointer(releases, tmp_path: Path) -> None:
    """Before `dvc repro` there is no pointer: the server says how to make one, stays live
    and not ready, and loads the model as soon as the pointer appears (as TF Serving waits
    for a version); --require-model exits 2 with the same advice instead."""
    root, a, _ = releases
    project = tmp_path / "project"
    (project / "deployment").mkdir(parents=True)
    pointer = project / POINTER
    base = [sys.executable, "-m", "deployment.server.serve", "--pointer", str(pointer)]
    refused = subprocess.run([*base, "--require-model"], capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no production model yet" in refused.stderr and "`dvc repro`" in refused.stderr
    port, log = free_port(), tmp_path / "server.log"
    cmd = [*base, "--port", str(port), "--watch-interval", "0.2"]
    cmd += ["--feedback-dir", str(tmp_path / "feedback")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=project, stdout=out, stderr=out)
    srv = Server(f"http://127.0.0.1:{port}", port, proc, log, tmp_path / "feedback")
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while call(srv, "GET", "/v2/health/live")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)  # a few polls of the missing pointer
        assert call(srv, "GET", "/v2/health/ready")[0] == 503 and proc.poll() is None
        assert "dvc repro" in log.read_text()
        absolute = {"bundle": str(root / a.bundle), "eval_samples": str(root / a.eval_samples)}
        write_pointer(project, a.pointer(**absolute))  # its paths: another project's
        wait_ready(proc, srv.url, log, READY_TIMEOUT)
        assert version(srv) == a.sha256[:12]
        status, _ = call(srv, "POST", "/predict", png(0), {"Content-Type": "image/png"})
        assert status == 200
    finally:
        stop(srv)


# ---- --workers 2: every worker reloads, /metrics adds up, feedback crosses workers ----


@pytest.fixture(scope="module")
def workers(releases, tmp_path_factory: pytest.TempPathFactory):
    """`serve --workers 2` on a pointer of its own (release a, absolute paths), polled every
    0.2 s; (server, its project). Stopping it (SIGTERM) drains both workers: exit status 0."""
    root, a, _ = releases
    project = tmp_path_factory.mktemp("workers")
    write_pointer(project, a.pointer(**_absolute(root, a)))
    pointer = project / POINTER
    flags = ("--workers", "2", "--pointer", pointer, "--watch-interval", "0.2")
    srv = start(project, *flags, "--drain-seconds", "0.2", name="workers")
    yield srv, project
    stop(srv)
    assert srv.proc.returncode == 0 and "Traceback" not in srv.logged(), srv.logged()[-3000:]


def _absolute(root: Path, release) -> dict:
    return {"bundle": str(root / release.bundle), "eval_samples": str(root / release.eval_samples)}


def _lives(srv: Server, count: int) -> list[tuple[int, str]]:
    """(pid, model_version) of `count` GET /v2/health/live, each on a new connection (urllib
    closes it), so the kernel may hand each to either worker."""
    answers = []
    for _ in range(count):
        status, body = call(srv, "GET", "/v2/health/live")
        assert status == 200, (status, body)
        answers.append((body["pid"], body["model_version"]))
    return answers


def test_every_worker_reloads_the_pointer(workers, releases) -> None:
    (srv, project), (root, a, b) = workers, releases
    before = _lives(srv, 40)
    pids = {pid for pid, _ in before}
    assert len(pids) == 2 and {v for _, v in before} == {a.sha256[:12]}, before
    write_pointer(project, b.pointer(**_absolute(root, b)))
    deadline = time.monotonic() + RELOAD_TIMEOUT
    latest: dict[int, str] = {}  # pid -> the version it answered last
    # every worker must be seen on b: ten answers may all come from one of them
    while set(latest) != pids or set(latest.values()) != {b.sha256[:12]}:
        assert time.monotonic() < deadline, srv.logged()[-3000:]
        latest.update(_lives(srv, 10))
    after = _lives(srv, 40)
    assert {pid for pid, _ in after} == pids, after  # the same two processes, both reloaded
    assert {v for _, v in after} == {b.sha256[:12]}, after
    assert len(re.findall(r"serve: ready: .* version " + b.sha256[:12], srv.logged())) == 2
    for found in _scrapes(srv).values():  # each swap counts; a is served by no worker now
        assert found[-1]["serve_model_reloads_total{}"] == 2
        assert found[-1][f"serve_model_info{{name={CELL},version={b.sha256[:12]}}}"] == 1
        assert found[-1][f"serve_model_info{{name={CELL},version={a.sha256[:12]}}}"] == 0


def _scrape(srv: Server) -> tuple[int, dict[str, float]]:
    """(pid, {series: value}) of one GET /metrics, the pid from a GET /v2/health/live on the
    same connection (one connection is one worker's)."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", "/v2/health/live")
        pid = json.loads(conn.getresponse().read())["pid"]
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return pid, samples


def _scrapes(srv: Server, at_least: int = 4) -> dict[int, list[dict[str, float]]]:
    """`_scrape`s until both workers have answered (and `at_least` in all), by pid."""
    found: dict[int, list[dict[str, float]]] = {}
    for _ in range(200):
        pid, samples = _scrape(srv)
        found.setdefault(pid, []).append(samples)
        if len(found) == 2 and sum(map(len, found.values())) >= at_least:
            return found
    raise AssertionError(f"one worker answered 200 scrapes: {list(found)}")


def test_metrics_add_up_across_workers(workers) -> None:
    """K infers, each on a new connection: every worker's /metrics counts K more in all,
    and the drift windows (each worker's own) grow by K in all, each worker's by some."""
    srv, _ = workers
    counter = "serve_requests_total{method=POST,route=/v2/models/{name}/infer,status=200}"
    window = "serve_drift_window_predictions{model=tiny}"  # served by its dataset's name
    before = _scrapes(srv)
    count = {s.get(counter, 0.0) for found in before.values() for s in found}
    assert len(count) == 1, count
    k = 30
    pixels = {"name": "pixels", "datatype": "UINT8", "shape": [1, 8, 8, 1], "data": [7] * 64}
    for _ in range(k):
        status, body = call(srv, "POST", f"/v2/models/{CELL}/infer", {"inputs": [pixels]})
        assert status == 200, body
    after = _scrapes(srv, at_least=10)
    assert {s[counter] for found in after.values() for s in found} == {count.pop() + k}
    grown = {pid: after[pid][-1][window] - before[pid][-1][window] for pid in after}
    assert sum(grown.values()) == k and min(grown.values()) > 0, grown


def _connect(srv: Server, other_than: int | None = None) -> tuple[http.client.HTTPConnection, int]:
    """A connection and the pid of the worker that holds it; another one's when asked."""
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/v2/health/live")
        pid = json.loads(conn.getresponse().read())["pid"]
        if pid != other_than:
            return conn, pid
        conn.close()
    raise AssertionError(f"worker {other_than} answered 200 connections")


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, kind: str) -> tuple:
    conn.request("POST", path, body, {"Content-Type": kind})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_feedback_reaches_the_worker_that_did_not_predict(workers) -> None:
    """/predict on one worker, /feedback on the other: stored (the recent predictions are in
    the database with --workers > 1)."""
    srv, _ = workers
    for i in range(3):
        conn, pid = _connect(srv)
        status, answer = _post(conn, "/predict", png(i, seed=20 + i), "image/png")
        conn.close()
        assert status == 200, answer
        conn, _ = _connect(srv, other_than=pid)
        body = json.dumps({"request_id": answer["request_id"], "true_label": "bar"}).encode()
        status, stored = _post(conn, "/feedback", body, "application/json")
        conn.close()
        assert status == 200 and stored["record"]["model_version"] == answer["model_version"]
