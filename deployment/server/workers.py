"""Serving on every core: `serve --workers N` (N > 1) runs N server processes on one port.

The parent binds host:port, makes a fresh folder for the workers, and starts N copies of
`python -m deployment.server.serve` with env SERVE_WORKER set: the listening socket's fd
(inherited), the parent's pid and the server's Config as JSON (to_json; nothing is
pickled). Each then runs the one-process server on that socket (serve.main reads
`worker_spec`), so it loads the bundle, watches the pointer and hot-reloads on its own, and drains
on SIGTERM as one server does; the kernel gives each new connection to the worker that accepts
it first. While a pointer change is being loaded (each worker within --watch-interval of it),
workers may answer with either version, each answer naming its model_version.

Readiness is 200 once every worker has its model: each puts a file named by its pid in the
folder's ready/ (env SERVE_READY_DIR, lifecycle.State.ready). /metrics: env
PROMETHEUS_MULTIPROC_DIR names its metrics/, so prometheus-client keeps every worker's
metrics in files there and any worker's /metrics adds them up (telemetry.py).

Signals: SIGTERM or SIGINT to the parent goes to every worker (the workers have their own
process group, so a terminal's Ctrl-C reaches them once, through the parent); the parent
exits 0 once all have drained and exited 0. A worker killed by a signal (the OOM killer) is
replaced (its ready file and live gauges go first); one that stops by itself (its first load
failed) stops the server, status 1. A worker whose parent is gone drains and exits. The
folder is removed at exit.

Run: reprovision serve --workers 2 ...
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from prometheus_client import multiprocess

from deployment.server.options import Config
from deployment.server.served import READY_DIR
from deployment.server.telemetry import MULTIPROCESS_DIR

WORKER_ENV = "SERVE_WORKER"  # {"fd", "parent", "config"} for a worker, as JSON
BACKLOG = 2048  # uvicorn's default
POLL_S = 0.2  # how often the parent looks at its workers


def supervise(config: Config, host: str, port: int, workers: int) -> int:
    """Serve `config` on host:port with `workers` processes until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 when every worker drained and exited 0, else 1.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:  # bound here, before any worker starts: a port in use fails once, at once
        listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as err:
        _log(f"cannot listen on {host}:{port}: {err}")
        return 1
    listener.set_inheritable(True)
    folder = Path(tempfile.mkdtemp(prefix="serve-workers-"))
    (folder / "metrics").mkdir()
    (folder / "ready").mkdir()
    spec = {"fd": listener.fileno(), "parent": os.getpid(), "config": to_json(config)}
    env = {**os.environ, WORKER_ENV: json.dumps(spec)}
    env |= {MULTIPROCESS_DIR: str(folder / "metrics"), READY_DIR: str(folder / "ready")}
    pool = _Pool(env, listener.fileno(), folder)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, pool.forward)
    try:
        return pool.run(workers, f"http://{host}:{port}")
    finally:
        pool.kill()
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


class _Pool:
    """The worker processes, by pid; replaced when killed, signalled when the parent is."""

    def __init__(self, env: dict[str, str], fd: int, folder: Path) -> None:
        self.env, self.fd, self.folder = env, fd, folder
        self.live: dict[int, subprocess.Popen] = {}
        self.stopping = False

    def _start(self) -> None:
        cmd = [sys.executable, "-m", "deployment.server.serve"]
        proc = subprocess.Popen(cmd, env=self.env, pass_fds=(self.fd,), process_group=0)
        self.live[proc.pid] = proc
        if self.stopping:  # a signal came while it started
            proc.terminate()

    def forward(self, sig: int, frame=None) -> None:
        """Stop: pass the signal on (a second one stops the workers at once)."""
        self.stopping = True
        for proc in list(self.live.values()):
            if proc.poll() is None:
                proc.send_signal(sig)

    def run(self, workers: int, url: str) -> int:
        for _ in range(workers):
            self._start()
        pids = ", ".join(map(str, self.live))
        _log(f"{workers} workers (pids {pids}) on {url}")
        failed = False
        while self.live:
            time.sleep(POLL_S)
            for pid, proc in list(self.live.items()):
                if proc.poll() is None:
                    continue
                del self.live[pid]
                (self.folder / "ready" / str(pid)).unlink(missing_ok=True)
                multiprocess.mark_process_dead(pid, str(self.folder / "metrics"))
                status = proc.returncode
                if self.stopping:
                    failed |= status != 0
                elif status < 0:  # killed from outside: replace it
                    _log(f"worker {pid} killed by {signal.Signals(-status).name}; starting one")
                    self._start()
                else:  # it stopped by itself, as a one-process server does when it cannot load
                    _log(f"worker {pid} exited with {status}; stopping")
                    failed = True
                    self.forward(signal.SIGTERM)
        return 1 if failed else 0

    def kill(self) -> None:
        """SIGKILL whatever is left (the parent is leaving on an error)."""
        for proc in self.live.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _log(line: str) -> None:
    print(f"serve: {line}", file=sys.stderr, flush=True)


def _exit_with(parent: int) -> None:
    """Drain and exit (SIGTERM to this process) once `parent` is gone (SIGKILLed, say)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


PATHS = ("bundle", "deployment", "feedback_dir")  # Config's Path fields: strings in JSON


def to_json(config: Config) -> str:
    """`config` as JSON text, how --workers hands it to each worker process (no pickle)."""
    data = asdict(config)
    data["pointers"] = [str(p) for p in config.pointers]
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})


def from_json(text: str) -> Config:
    """The Config `to_json` wrote."""
    data = json.loads(text)
    data["pointers"] = [Path(p) for p in data.get("pointers", [])]
    return Config(**{k: Path(v) if k in PATHS and v is not None else v for k, v in data.items()})


def worker_spec() -> tuple[Config, socket.socket] | None:
    """In a worker process (env SERVE_WORKER): its Config and the inherited listening socket,
    with a watch that drains it once the parent is gone; None in any other process."""
    text = os.environ.pop(WORKER_ENV, None)
    if text is None:
        return None
    spec = json.loads(text)
    _exit_with(spec["parent"])
    return from_json(spec["config"]), socket.socket(fileno=spec["fd"])
