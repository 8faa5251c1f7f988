"""`python -m models.sweep` (--engine local, the default): the ordered plan on DVC's own queue.

`dvc exp run --queue` for each experiment in priority order (DVC's queue is first in, first
out), `dvc queue start -j N` (its output goes to a file: it blocks when piped), progress with
an ETA until all have finished, and the end of the log of each one that failed.
"""

import subprocess
import sys
import time
from pathlib import Path

from data_processing.core.errors import CommandError

LOG_DIR = Path(".dvc/tmp/sweep")


def dvc(*args: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run dvc; with `log`, its output goes to that file (never a pipe: queue start blocks)."""
    if log is None:
        return subprocess.run(["dvc", *args], capture_output=True, text=True)
    with open(log, "w") as out:
        return subprocess.run(["dvc", *args], stdout=out, stderr=subprocess.STDOUT)


def queue_status() -> tuple[dict[str, str], int]:
    """Experiment name -> Queued | Running | Success | Failed, and the number of live queue
    workers (active or idle), from `dvc queue status`."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / "status.txt"
    dvc("queue", "status", log=log)
    status, workers = {}, 0
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
            status[parts[1]] = parts[-1]
        elif line.startswith("Worker status:"):  # "Worker status: 1 active, 0 idle"
            workers = sum(int(p) for p in parts[2:] if p.isdigit())
    return status, workers


ORPHANED_S = 30.0  # no live worker this long: a Running experiment is lost


def wait(names: list[str], poll: float, timeout: float, jobs: int) -> dict[str, str]:
    """Poll the queue until every name has finished; print progress with an ETA. A queue
    worker can stop while experiments are still queued (kombu's file broker reads a message
    half-written, treeverse/dvc#9143 and alike): after two such polls, start one again. It
    can also stop with an experiment marked Running that no worker runs: once no worker has
    been alive for ORPHANED_S, such an experiment is reported Failed (lost by the queue),
    instead of waiting for the timeout."""
    start, last, stalled, idle_since = time.monotonic(), "", 0, None
    lost: set[str] = set()
    while True:
        status, workers = queue_status()
        mine = {n: "Failed" if n in lost else status.get(n, "Queued") for n in names}
        done = sum(s in ("Success", "Failed") for s in mine.values())
        running = sum(s == "Running" for s in mine.values())
        failed = sum(s == "Failed" for s in mine.values())
        elapsed = time.monotonic() - start
        eta = elapsed / done * (len(names) - done) if done else float("nan")
        line = (
            f"sweep: {done}/{len(names)} done, {running} running, {failed} failed, ETA {eta:.0f}s"
        )
        if line != last:
            print(line, flush=True)
            last = line
        if done == len(names):
            return mine
        idle_since = None if workers else (idle_since or time.monotonic())
        if running and idle_since and time.monotonic() - idle_since > ORPHANED_S:
            for name in (n for n, s in mine.items() if s == "Running"):
                print(f"sweep: {name}: marked Running, but no worker runs it; lost", flush=True)
                lost.add(name)
            continue
        stalled = stalled + 1 if workers == 0 and not running else 0
        if stalled >= 2:
            print("sweep: no queue worker is running; starting one again", flush=True)
            dvc("queue", "start", "-j", str(jobs), log=LOG_DIR / "queue-start.txt")
            stalled = 0
        if elapsed > timeout:
            raise CommandError(
                "dvc queue", f"the sweep to finish within {timeout:.0f}s", found=line
            )
        time.sleep(poll)


def run(
    commands: list[tuple[str, list[str]]], jobs: int, poll: float, timeout: float
) -> dict[str, str]:
    """Queue each (name, `dvc exp run --queue ...`) in order, start the workers and wait."""
    for name, command in commands:
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CommandError("dvc exp run --queue", f"{name} queued", found=proc.stderr)
    if not commands:
        return {}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    dvc("queue", "start", "-j", str(jobs), log=LOG_DIR / "queue-start.txt")
    status = wait([name for name, _ in commands], poll, timeout, jobs)
    for name, state in status.items():
        if state == "Failed":
            log = dvc("queue", "logs", name)
            print(f"sweep: {name} FAILED; its log ends:\n{log.stdout[-3000:]}", file=sys.stderr)
    return status
