"""One cell of the grid, anywhere: the entry point every scheduler runs (Ray, a Kubernetes
Indexed Job, a Slurm array, a GitHub Actions matrix; `python -m models.sweep --emit`).

1. Clone the git remote into a new folder and check out the experiment's commit (--rev), so no
   two cells share a workspace or a dvc.lock.
2. `dvc pull --with-deps --allow-missing --run-cache export@<cell>`: the raw data, any
   upstream outputs already pushed, and the run cache (unchanged stages are not rerun).
3. `dvc exp run -n <name> [-S key=value ...] export@<cell>`.
4. `dvc exp push --run-cache origin <name>`: the experiment's git ref to the git remote, and
   its outputs and run cache to the default DVC remote (S3 in production:
   docs/pages/cluster.md).
5. Remove the clone; the exit status is the cell's.

A cell comes by name (`worker CELL`) or by index into a plan (`worker --index I`, the plan's
JSON in $REPROVISION_PLAN): the form array schedulers use, where the index is the task's.

Run: reprovision sweep worker digits-cnn-base --rev $(git rev-parse HEAD)
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import CommandError, DataError, exit_on_error

PLAN_ENV = "REPROVISION_PLAN"  # JSON: [{"cell": ..., "name": ..., "set": ["k=v", ...]}, ...]


def plan_entry(index: int, plan_json: str | None) -> dict:
    """Entry `index` of the plan in $REPROVISION_PLAN."""
    if not plan_json:
        raise DataError(f"${PLAN_ENV}", "the plan's JSON (written by models.sweep --emit)")
    try:
        plan = json.loads(plan_json)
    except json.JSONDecodeError as err:
        raise DataError(f"${PLAN_ENV}", "valid JSON", found=str(err)) from None
    if not isinstance(plan, list) or not 0 <= index < len(plan):
        size = len(plan) if isinstance(plan, list) else "not a list"
        raise DataError(f"${PLAN_ENV}", f"a list with an entry {index}", found=size)
    entry = plan[index]
    if not isinstance(entry, dict) or not isinstance(entry.get("cell"), str):
        raise DataError(f"${PLAN_ENV}", f'entry {index} with a "cell"', found=repr(entry))
    return entry


def run(cmd: list[str], cwd: Path, what: str) -> None:
    """Run one step, its output streamed to the scheduler's log; fail with the step's name."""
    print(f"worker: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=cwd)
    if proc.returncode != 0:
        raise CommandError(" ".join(cmd[:3]), what, found=f"exit status {proc.returncode}")


def origin_url() -> str:
    out = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True)
    if out.returncode != 0:
        raise DataError("--repo", "a git URL, or a checkout whose `origin` names one")
    return out.stdout.strip()


def work(cell: str, name: str, sets: list[str], rev: str, repo: str, clone: Path) -> None:
    """Steps 1-4 in `clone`, a new empty folder."""
    run(["git", "clone", "-q", "--no-checkout", repo, str(clone)], clone.parent, "the git remote")
    run(["git", "checkout", "-q", rev], clone, f"commit {rev} in {repo}")
    target = f"export@{cell}"
    pull = ["dvc", "pull", "--with-deps", "--allow-missing", "--run-cache", target]
    run(pull, clone, "the cell's data from the DVC remote")
    overrides = [arg for kv in sets for arg in ("-S", kv)]
    run(["dvc", "exp", "run", "-n", name, *overrides, target], clone, f"experiment {name} trained")
    push = ["dvc", "exp", "push", "--run-cache", "origin", name]
    run(push, clone, f"experiment {name} pushed to origin and the DVC remote")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{cli.prog()} worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("cell", nargs="?", help="<dataset>-<model>-<hparams> (or --index)")
    parser.add_argument("--index", type=int, help=f"the entry of ${PLAN_ENV} to run")
    parser.add_argument("--rev", required=True, help="the git commit the grid runs at")
    parser.add_argument("--name", help="experiment name (default: the cell)")
    parser.add_argument("-S", dest="set", action="append", default=[], help="key=value")
    parser.add_argument("--repo", help="git remote to clone (default: this checkout's origin)")
    parser.add_argument("--workdir", type=Path, default=None, help="where clones go ($TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (debugging)")
    args = parser.parse_args(argv)
    if (args.cell is None) == (args.index is None):
        parser.error("give one of CELL or --index")
    return args


def stop_steps_on_sigterm() -> None:
    """When this worker leads its process group (a Ray task starts it so, and a dying task
    sends SIGTERM), pass SIGTERM on to git, dvc and training, then exit through `finally` so the
    clone is removed; the retry starts clean."""
    if os.getpgrp() != os.getpid():
        return

    def stop(signum: int, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    stop_steps_on_sigterm()
    if args.index is not None:
        entry = plan_entry(args.index, os.environ.get(PLAN_ENV))
    else:
        entry = {"cell": args.cell, "name": args.name, "set": args.set}
    cell, sets = entry["cell"], entry.get("set") or []
    name = entry.get("name") or cell
    workdir = args.workdir or Path(tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    clone = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    try:
        work(cell, name, sets, args.rev, args.repo or origin_url(), clone)
    finally:  # a retried task starts from a new clone; a failed one leaves no disk behind
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
    print(f"worker: {name} done", flush=True)
