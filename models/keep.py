"""Keep one experiment: `dvc exp apply` it, then one git commit that records its name and
key metrics (the seed's experiment log, kept by git itself). Experiments of every commit
count (`dvc exp show -A`), so one run before a commit is still found after it.

    python -m models.keep                 # the best experiment by test macro F1
    python -m models.keep NAME            # a named one (see `dvc exp show`)
    python -m models.keep NAME --dry-run  # print the commit message only

Run `dvc push` (and `dvc exp push origin NAME` before applying, to share the experiment
itself) to publish the kept model's data.
"""

import argparse
import json
import subprocess
from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import CommandError, DataError, exit_on_error
from models.common.leaderboard import experiments

KEY_METRICS = ("f1_macro", "accuracy", "ece", "size_mb")  # evaluate.headline's
HEADLINES = "models/metrics/"  # evaluate's per-cell headline files


def best_scores(data: dict) -> tuple[str, dict]:
    """Return (cell, headline) with the highest macro F1 in one experiment's metrics."""
    found = [
        (Path(path).stem, m["data"])
        for path, m in (data.get("metrics") or {}).items()
        if path.startswith(HEADLINES) and "f1_macro" in (m.get("data") or {})  # not best.json
    ]
    if not found:
        raise DataError("dvc exp show", "an experiment with test metrics", found="none")
    return max(found, key=lambda item: item[1]["f1_macro"])


def message(name: str, cell: str, test: dict) -> str:
    """The commit message: the experiment's name and its best cell's headline, one line."""
    scores = ", ".join(f"{k}={test[k]:.4f}" for k in KEY_METRICS if k in test)
    return f"Keep experiment {name}: {cell} {scores}"


def choose(show: list[dict], name: str | None) -> tuple[str, str, dict]:
    """Return (experiment name, its best cell, that cell's headline) for `name`, or the
    experiment with the best macro F1."""
    records = experiments(show)
    if name is not None and name not in records:
        raise DataError("dvc exp show", f"one of {sorted(records)}", field="NAME", found=name)
    candidates = {n: best_scores(d) for n, d in records.items() if name in (None, n)}
    if not candidates:
        raise DataError("dvc exp show", "at least one experiment", found="none")
    best = max(candidates, key=lambda n: (candidates[n][1]["f1_macro"], n))
    return best, *candidates[best]


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandError(" ".join(cmd), "success", found=proc.stderr.strip()[-500:])
    return proc.stdout


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=cli.prog(), description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="experiment name (default: the best)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    show = json.loads(_run("dvc", "exp", "show", "--json", "--all-commits") or "[]")
    name, cell, test = choose(show, args.name)
    text = message(name, cell, test)
    if args.dry_run:
        print(text)
        return
    _run("dvc", "exp", "apply", name)
    _run("git", "add", "-u")
    _run("git", "commit", "-q", "-m", text)
    print(f"keep: {text}")


if __name__ == "__main__":
    main()
