"""`python -m models.sweep --engine ray`: the ordered plan on a Ray cluster people already run.

Each cell is one Ray task that runs the per-cell worker (models/sweep_worker.py: its own clone
of --rev, dvc pull, dvc exp run, dvc exp push with the run cache) as a child process. Tasks are
submitted in priority order, so with fewer CPUs than cells the higher-priority ones start
first. Ray retries a task whose worker process dies (`max_retries`) and, as Kubernetes' Job
does per index, a cell whose worker exits non-zero; a cell that still fails is reported with
the end of its log while the rest go on. The driver then fetches every finished experiment
with `dvc exp pull`, so the leaderboard and `dvc exp show` read the same records as the local
queue's.

Every node needs this project installed (the training image, deployment/Dockerfile.train),
`git` and `dvc` on PATH, and the DVC remote's credentials in its environment (AWS_* for S3).
"""

import collections
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from data_processing.core.errors import CommandError

LOG_TAIL = 200  # lines of a failed cell's log kept for the report
PR_SET_PDEATHSIG = 1


class CellFailed(RuntimeError):
    """The worker for one cell exited non-zero; its message ends with the end of its log."""


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    log: str  # the end of the worker's log (for a failure: of its last attempt)


# Looked up before any fork: between fork and exec (a Ray worker has threads) only the call
# itself is safe, not a dlopen.
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the Ray worker that started it dies (Linux), so a killed
    task leaves no training behind; the worker then stops its own steps (sweep_worker)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(entry: dict, rev: str, repo: str) -> list[str]:
    sets = [arg for kv in entry.get("set") or [] for arg in ("-S", kv)]
    return [
        sys.executable, "-m", "models.sweep", "worker", entry["cell"],
        "--name", entry["name"], "--rev", rev, "--repo", repo, *sets,
    ]  # fmt: skip


def run_cell(entry: dict, rev: str, repo: str) -> str:
    """The Ray task: run the worker; return the end of its log, or raise CellFailed."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    proc = subprocess.Popen(
        worker_command(entry, rev, repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the worker leads a process group it can stop as one
        preexec_fn=_die_with_parent,
    )
    for line in proc.stdout:
        print(line, end="", flush=True)  # the node's Ray log for this task
        tail.append(line)
    status = proc.wait()
    if status != 0:
        log = "".join(tail)[-3000:]
        raise CellFailed(f"worker exit status {status}; its log ends:\n{log}")
    return "".join(tail)


def submit(ray, plan: list[dict], rev: str, repo: str, retries: int, cpus: float) -> dict:
    """Submit one task per cell, highest priority first; return name -> ObjectRef."""
    task = ray.remote(run_cell).options(
        num_cpus=cpus, max_retries=retries, retry_exceptions=[CellFailed], name="sweep-cell"
    )
    return {entry["name"]: task.remote(entry, rev, repo) for entry in plan}


def wait(ray, refs: dict, timeout: float, poll: float) -> list[Outcome]:
    """Gather every task, printing progress (done, failed, ETA) as they finish."""
    pending = {ref: name for name, ref in refs.items()}
    outcomes, start = [], time.monotonic()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll)
        for ref in ready:
            name = pending.pop(ref)
            try:
                outcomes.append(Outcome(name, True, ray.get(ref)))
            except Exception as err:  # noqa: BLE001 (any task error is this cell's failure)
                # RayTaskError wraps the task's own error; a dead worker has no cause.
                outcomes.append(Outcome(name, False, str(getattr(err, "cause", None) or err)))
        elapsed, done = time.monotonic() - start, len(outcomes)
        if ready:
            failed = sum(not o.ok for o in outcomes)
            eta = elapsed / done * len(pending)
            print(
                f"sweep: {done}/{len(refs)} done, {len(pending)} pending, {failed} failed,"
                f" ETA {eta:.0f}s",
                flush=True,
            )
        if pending and elapsed > timeout:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise CommandError("ray", f"the sweep to finish within {timeout:.0f}s")
    return outcomes


def gather(outcomes: list[Outcome], repo: str) -> None:
    """`dvc exp pull` each finished experiment into this workspace (git refs, metrics, plots)."""
    for outcome in outcomes:
        if not outcome.ok:
            continue
        # With its cache: the metrics and plots are DVC outputs (and so is the bundle).
        pull = ["dvc", "exp", "pull", repo, outcome.name]
        proc = subprocess.run(pull, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CommandError(f"dvc exp pull {outcome.name}", "the experiment", found=proc.stderr)


def run(
    plan: list[dict],
    rev: str,
    repo: str,
    address: str | None,
    *,
    retries: int = 2,
    cpus: float = 1.0,
    timeout: float = 6 * 3600,
    poll: float = 5.0,
) -> dict[str, str]:
    """Run the plan on the Ray cluster at `address`; return name -> Success | Failed."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        outcomes = wait(ray, submit(ray, plan, rev, repo, retries, cpus), timeout, poll)
    finally:
        ray.shutdown()
    for outcome in outcomes:
        if not outcome.ok:
            print(f"sweep: {outcome.name} FAILED: {outcome.log}", file=sys.stderr)
    gather(outcomes, repo)
    return {o.name: "Success" if o.ok else "Failed" for o in outcomes}
