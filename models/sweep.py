"""Sweep n datasets x m models x o hyperparameter sets as a priority queue on DVC's own queue.

1. Enumerate the cells from params.yaml (narrowed by --datasets/--models/--hparams) times any
   `-S key=v1,v2` grids.
2. Order them: the most recently added or changed dataset first, then `sweep.model_priority`,
   then the order of the `hparams` sets, then the grid.
3. Queue one DVC experiment per combination, in that order (DVC's queue is first in, first
   out): `dvc exp run --queue -n NAME [-S ...] export@<cell>`. A name that already exists is
   skipped (use --force to queue it again); unchanged stages come from DVC's run cache.
4. `dvc queue start -j N` (models/sweep_queue.py; its output goes to a file), show progress
   (done, running, failed, ETA), print the log of every failed experiment, and end with a
   leaderboard: a table here, plus models/leaderboard.md and models/leaderboard.png.

Past one machine, the same plan goes to an engine people already run, each cell one
`python -m models.sweep worker` (models/sweep_worker.py) working in its own clone of the commit
and pushing its experiment to the git remote --repo and the DVC remote:
- `--engine ray [--address HOST:PORT]` runs each cell as a Ray task (models/sweep_ray.py),
  then pulls the experiments back (`dvc exp pull`) for the same leaderboard;
- `--emit k8s|slurm|github` writes the scheduler's job (models/sweep_emit.py) for --rev.

Run: reprovision sweep [--dry-run] [-j 2] [--models cnn,mlp]
         [-S hparams.base.learning_rate=0.001,0.01]
     python -m models.sweep --engine ray --address 127.0.0.1:6379
     python -m models.sweep --emit k8s --rev $(git rev-parse HEAD) > sweep-job.yaml
     python -m models.sweep worker digits-cnn-base --rev $(git rev-parse HEAD)
"""

import argparse
import hashlib
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import CommandError, DataError, exit_on_error
from data_processing.core.params import Params, load_params, read_params
from models import sweep_emit, sweep_queue, sweep_ray, sweep_worker
from models.common import leaderboard
from models.common.paths import RAW, Cell


class SweepParams(Params):
    model_priority: list[str] = []  # models named here run first, in this order
    jobs: int = 1  # parallel queue workers (dvc queue start -j)


@dataclass(frozen=True)
class Combo:
    cell: Cell
    overrides: tuple[tuple[str, str], ...] = ()  # (-S key, value) pairs from the grids

    @property
    def name(self) -> str:
        """The experiment name: the cell, plus a short hash of any grid overrides."""
        if not self.overrides:
            return self.cell.name
        text = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.cell.name}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"

    def command(self) -> list[str]:
        sets = [arg for k, v in self.overrides for arg in ("-S", f"{k}={v}")]
        return ["dvc", "exp", "run", "--queue", "-n", self.name, *sets, f"export@{self.cell.name}"]


def parse_grid(specs: list[str]) -> list[tuple[tuple[str, str], ...]]:
    """`-S key=a,b -S other=c` -> every combination of (key, value) pairs."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise DataError("-S", "key=value[,value...]", found=repr(spec))
        axes.append([(key, v) for v in values.split(",")])
    return [tuple(c) for c in itertools.product(*axes)] if axes else [()]


def dataset_changed(name: str) -> float:
    """When the dataset was last added or changed: its .dvc file's last commit, else mtime."""
    dvc_file = RAW / f"{name}.dvc"
    out = subprocess.run(
        ["git", "log", "-1", "--format=%ct", "--", str(dvc_file)], capture_output=True, text=True
    )
    if out.returncode == 0 and out.stdout.strip():
        return float(out.stdout.strip())
    folder = RAW / name
    return folder.stat().st_mtime if folder.exists() else 0.0


def plan(
    params: dict,
    sweep: SweepParams,
    pick: dict[str, list[str] | None],
    grid: list[tuple],
    changed=dataset_changed,
) -> list[Combo]:
    """Return every combination in priority order (see the module docstring)."""
    axes = {}
    for axis in ("datasets", "models", "hparams"):
        known = list(params[axis])
        chosen = pick.get(axis) or known
        unknown = [c for c in chosen if c not in known]
        if unknown:
            raise DataError("params.yaml", f"{axis} from {known}", field=axis, found=unknown)
        axes[axis] = chosen
    recency = {d: changed(d) for d in axes["datasets"]}
    model_rank = {m: i for i, m in enumerate(sweep.model_priority)}
    order = list(params["models"])
    hparams_order = list(params["hparams"])
    combos = [
        Combo(Cell(d, m, h), g)
        for d in axes["datasets"]
        for m in axes["models"]
        for h in axes["hparams"]
        for g in grid
    ]

    def priority(c: Combo) -> tuple:
        m = c.cell.model
        return (
            -recency[c.cell.dataset],
            c.cell.dataset,
            model_rank.get(m, len(model_rank) + order.index(m)),
            hparams_order.index(c.cell.hparams),
            grid.index(c.overrides),
        )

    return sorted(combos, key=priority)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.make_parser(__doc__)
    for axis in ("datasets", "models", "hparams"):
        parser.add_argument(
            f"--{axis}",
            type=lambda s: s.split(","),
            default=None,
            help=f"comma-separated {axis} (default: all in params.yaml)",
        )
    parser.add_argument(
        "-S",
        dest="grid",
        action="append",
        default=[],
        help="a params grid, key=v1,v2 (repeatable: cartesian product)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel queue workers")
    parser.add_argument("--dry-run", action="store_true", help="print the ordered plan only")
    parser.add_argument("--force", action="store_true", help="queue existing names again")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait")
    parser.add_argument("--poll", type=float, default=3.0, help="seconds between polls")
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="DVC's queue, or Ray"
    )
    parser.add_argument("--address", help="ray: the cluster (default: RAY_ADDRESS or local)")
    parser.add_argument("--retries", type=int, default=2, help="ray: retries of a cell")
    parser.add_argument("--cpus", type=float, default=1.0, help="ray: CPUs a cell reserves")
    parser.add_argument("--emit", choices=sweep_emit.FORMATS, help="write a scheduler's job")
    parser.add_argument("--rev", help="ray, --emit: the commit to run (default: HEAD)")
    parser.add_argument("--repo", help="ray, --emit: the git remote (default: origin)")
    return parser.parse_args(argv)


def git_out(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise CommandError(f"git {' '.join(args)}", "a git checkout", found=out.stderr.strip())
    return out.stdout.strip()


def fresh(combos: list[Combo], existing: set[str], force: bool) -> list[Combo]:
    """The combinations still to run: an existing experiment is skipped unless `force`."""
    todo = []
    for combo in combos:
        if combo.name in existing and not force:
            print(f"sweep: {combo.name} exists, skipped (--force runs it again)")
            continue
        todo.append(combo)
    return todo


def run_ray(combos: list[Combo], args: argparse.Namespace) -> dict[str, str]:
    """Run the combinations not yet on the git remote as Ray tasks; gather them here."""
    repo = args.repo or sweep_worker.origin_url()
    existing = set(sweep_queue.dvc("exp", "list", repo, "--name-only").stdout.split())
    todo = fresh(combos, existing, args.force)
    if not todo:
        return {}
    rev = git_out("rev-parse", args.rev or "HEAD")
    entries = sweep_emit.plan_entries(todo)
    return sweep_ray.run(
        entries, rev, repo, args.address,
        retries=args.retries, cpus=args.cpus, timeout=args.timeout, poll=args.poll,
    )  # fmt: skip


def run_local(combos: list[Combo], args: argparse.Namespace, jobs: int) -> dict[str, str]:
    """Queue the combinations not yet run on DVC's queue, in order, and wait for them."""
    existing = set(sweep_queue.dvc("exp", "list", "--name-only").stdout.split())
    todo = fresh(combos, existing, args.force)
    commands = [(c.name, c.command()) for c in todo]
    return sweep_queue.run(commands, jobs, args.poll, args.timeout)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return sweep_worker.main(argv[1:])
    args = parse_args(argv)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sweep = load_params("sweep", SweepParams)
    pick = {"datasets": args.datasets, "models": args.models, "hparams": args.hparams}
    combos = plan(read_params(), sweep, pick, parse_grid(args.grid))
    if args.emit:
        rev = git_out("rev-parse", args.rev or "HEAD")
        repo = args.repo or sweep_worker.origin_url()
        jobs = args.jobs or sweep.jobs
        errors, warnings = sweep_emit.check(repo)
        for line in errors + warnings:
            print(f"sweep --emit {args.emit}: {line}", file=sys.stderr)
        if errors:
            raise SystemExit(2)
        print(sweep_emit.emit(args.emit, combos, rev, repo, jobs), end="")
        return
    for i, combo in enumerate(combos, start=1):
        print(f"{i:3d}. {combo.name:32s} {' '.join(combo.command()[6:])}")
    if args.dry_run:
        return
    if args.engine == "ray":
        status = run_ray(combos, args)
    else:
        status = run_local(combos, args, args.jobs or sweep.jobs)
    board = leaderboard.collect({c.name: c.cell for c in combos})
    print(leaderboard.write(board, Path("models")))
    if any(s == "Failed" for s in status.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
