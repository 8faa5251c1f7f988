"""The grid on a real two-node Ray cluster on 127.0.0.1, through a bare git remote and moto's
S3 server: 2 datasets x 2 models x 1 set. One Ray worker is killed mid-cell and its task is
retried; the experiments on the remote, the leaderboard and the gate's pick equal a local
`--engine local` run of the same grid. `make test-cluster`; .ci/run runs it."""

import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import BIN, free_port, sh, stop_process, tool_env
from remotes import AWS_ENV, project_with_remotes

from deployment.release.select import ranked
from models.common.leaderboard import experiments

DATASETS = ("old", "new")
MODELS = ("mlp", "cnn")
CELLS = [f"{d}-{m}-quick" for d in ("new", "old") for m in ("cnn", "mlp")]  # priority order
# Every Ray address on 127.0.0.1 (tests/ray_node.py says why the variable is needed).
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_cluster(tmp_path: Path, s3: str):
    """A head and a second node, one CPU each, every address 127.0.0.1; yield the address."""
    env = tool_env(**LOOPBACK, **AWS_ENV)
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--include-dashboard=false"]
    joined = [str(BIN / "python"), str(Path(__file__).with_name("ray_node.py")), "start"]
    try:
        for cmd in ([*head, *common], [*joined, "--address", f"127.0.0.1:{port}", *common]):
            proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def non_loopback_listeners() -> list[str]:
    """Addresses Ray processes listen on that are not loopback (there must be none)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if "ray" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in conns
            if c.status == psutil.CONN_LISTEN and not loopback(c.laddr.ip)
        ]
    return found


def kill_a_worker_mid_cell(sweep: subprocess.Popen, deadline: float) -> tuple[int, int]:
    """Wait until some Ray worker's cell is training, then SIGKILL that Ray worker; return
    (its pid, the pid of the cell's worker process it had started)."""
    while time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before any cell trained"
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "models.sweep worker" not in cmd:
                continue
            try:
                training = any(
                    "models.train" in " ".join(c.cmdline()) for c in proc.children(True)
                )
                ray_worker = proc.parent()
            except psutil.NoSuchProcess:
                continue
            if training and ray_worker is not None:
                os.kill(ray_worker.pid, signal.SIGKILL)
                return ray_worker.pid, proc.pid
        time.sleep(0.5)
    raise AssertionError("no cell reached training in time")


def gone(pid: int, within: float) -> bool:
    """Whether process `pid` exits (or is a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def metrics_of(repo: Path) -> dict[str, dict]:
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo, stdout_only=True))
    return {
        name: data["metrics"][f"models/metrics/{name}.json"]["data"]
        for name, data in experiments(shown).items()
    }


def board(repo: Path) -> list[list[str]]:
    """The leaderboard's rows: rank, experiment, macro F1, accuracy, parameters."""
    text = (repo / "models" / "leaderboard.md").read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line[:3].strip("| ").isdigit()]
    return [r[:5] for r in rows]


def gate_pick(metrics: dict[str, dict]) -> str | None:
    """The cell select would promote with the gate open: its ranking of the headlines."""
    order = ranked({name: {**m, "passed": True} for name, m in metrics.items()})
    return order[0] if order else None


@pytest.mark.cluster
def test_grid_on_a_two_node_ray_cluster(tmp_path: Path, s3: str, ray_cluster: str) -> None:
    repo, remote = project_with_remotes(tmp_path, s3, DATASETS, MODELS)
    assert not non_loopback_listeners()

    # The driver: a fresh clone of the git remote; it needs neither the data nor a GPU.
    driver = tmp_path / "driver"
    sh("git", "clone", "-q", str(remote), str(driver), cwd=tmp_path)
    sweep = [str(BIN / "python"), "-m", "models.sweep", "--engine", "ray", "--poll", "1"]
    log = tmp_path / "ray-sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*sweep, "--address", ray_cluster],
            cwd=driver,
            env=tool_env(**LOOPBACK),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        killed, orphan = kill_a_worker_mid_cell(proc, time.monotonic() + 600)
        # The killed task's own steps stop with it (no training left behind)...
        assert gone(orphan, within=60), "the killed task's worker process kept running"
        assert proc.wait(timeout=1200) == 0, log.read_text()[-4000:]
    finally:
        stop_process(proc)
    out = log.read_text()
    assert "4/4 done, 0 pending, 0 failed" in out, out[-3000:]  # ...and its retry finished
    assert killed not in {p.pid for p in psutil.process_iter()}

    listed = sh("dvc", "exp", "list", "origin", "--name-only", cwd=driver, stdout_only=True)
    assert sorted(listed.split()) == sorted(CELLS)
    on_ray = metrics_of(driver)

    # The same grid on DVC's local queue, in the project itself.
    sh(str(BIN / "python"), "-m", "models.sweep", "-j", "1", "--poll", "1", cwd=repo)
    local = metrics_of(repo)
    assert sorted(on_ray) == sorted(local) == sorted(CELLS)
    for name in CELLS:
        assert on_ray[name] == local[name], name  # deterministic training
    assert board(driver) == board(repo)
    assert gate_pick(on_ray) == gate_pick(local) is not None
