"""Keep one experiment: `dvc exp apply` it, then one git commit that records its name and
key metrics (the seed's experiment log, kept by git itself). Experiments of every commit
count (`dvc exp list -A`), so one run before a commit is still found after it.

    reprovision keep                 # the best experiment by test macro F1
    reprovision keep NAME            # a named one (see `dvc exp show`)
    reprovision keep NAME --dry-run  # print the commit message only

Run `dvc push` (and `dvc exp push origin NAME` before applying, to share the experiment
itself) to publish the kept model's data.
"""

import json
import subprocess
from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import CommandError, DataError, exit_on_error
from models.common.leaderboard import experiments

KEY_METRICS = ("f1_macro", "accuracy", "ece", "size_mb")  # evaluate.headline's
HEADLINES = "models/metrics/"  # evaluate's per-cell headline files


def headlines(data: dict | None) -> dict[str, dict]:
    """Cell -> headline from one `dvc exp show --json` data record (not best.json)."""
    return {
        Path(path).stem: m["data"]
        for path, m in ((data or {}).get("metrics") or {}).items()
        if path.startswith(HEADLINES) and "f1_macro" in (m.get("data") or {})
    }


def changed_cells(data: dict, baseline: dict | None) -> dict[str, dict]:
    """The cells an experiment changed against its baseline commit (all when none did,
    e.g. a baseline without metrics): those are what keeping it is about."""
    mine, theirs = headlines(data), headlines(baseline)
    changed = {cell: h for cell, h in mine.items() if theirs.get(cell) != h}
    return changed or mine


def message(name: str, cell: str, test: dict, changed: list[str]) -> str:
    """The commit message: the experiment's name, the cell it changed (the best of them),
    that cell's headline, and any other cells it changed; one line."""
    scores = ", ".join(f"{k}={test[k]:.4f}" for k in KEY_METRICS if k in test)
    others = [c for c in changed if c != cell]
    more = f" (also changed: {', '.join(others)})" if others else ""
    return f"Keep experiment {name}: {cell} {scores}{more}"


def choose(show: list[dict], name: str | None) -> tuple[str, str, dict, list[str]]:
    """Return (experiment, its best changed cell, that cell's headline, every changed cell)
    for `name`, or for the experiment whose changed cells reach the best macro F1."""
    candidates = {}
    for baseline in show:
        for exp_name, data in experiments([baseline]).items():
            if name in (None, exp_name):
                candidates[exp_name] = changed_cells(data, baseline.get("data"))
    if name is not None and name not in candidates:
        known = sorted(experiments(show))
        raise DataError("dvc exp show", f"one of {known}", field="NAME", found=name)
    candidates = {n: cells for n, cells in candidates.items() if cells}
    if not candidates:
        raise DataError("dvc exp show", "an experiment with test metrics", found="none")

    def top(n: str) -> tuple[str, dict]:
        return max(candidates[n].items(), key=lambda item: (item[1]["f1_macro"], item[0]))

    best = max(candidates, key=lambda n: (top(n)[1]["f1_macro"], n))
    return best, *top(best), sorted(candidates[best])


def baselines() -> list[str]:
    """The commits that have experiments: `dvc exp show -A` reads every commit (a minute
    on a long history), so ask `dvc exp list -A` which ones matter first."""
    lines = _run("dvc", "exp", "list", "--all-commits").splitlines()
    return [line[:-1] for line in lines if line.endswith(":") and not line[:1].isspace()]


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandError(" ".join(cmd), "success", found=proc.stderr.strip()[-500:])
    return proc.stdout


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("name", nargs="?", help="experiment name (default: the best)")
    parser.add_argument("--dry-run", action="store_true", help="print the commit message only")
    args = parser.parse_args(argv)
    revs = baselines()
    if not revs:
        raise DataError("dvc exp list --all-commits", "at least one experiment", found="none")
    show_cmd = ["dvc", "exp", "show", "--json", *(f"--rev={rev}" for rev in revs)]
    name, cell, test, changed = choose(json.loads(_run(*show_cmd) or "[]"), args.name)
    text = message(name, cell, test, changed)
    if args.dry_run:
        print(text)
        return
    _run("dvc", "exp", "apply", name)
    _run("git", "add", "-u")
    _run("git", "commit", "-q", "-m", text)
    print(f"keep: {text}")


if __name__ == "__main__":
    main()
