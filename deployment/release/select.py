"""Select one dataset's production model: the best of its cells by test macro F1 among those
that pass the gate, promoted only when it beats the dataset's production model by
`select.margin`. Each dataset has its own production model (its own labels, its own task):
the gate never ranks one dataset's cells against another's.

Reads models/runs/<dataset>-<model>-<hparams>/eval/metrics.json (evaluate's figures) for
every model and hparams set of the current params. Writes, under deployment/<dataset>/:
gate.json (every candidate, pass or fail and why, and the decision) and best.json (the
dataset's headline for `dvc exp show`: {dataset: {best, f1_macro, accuracy, ece, size_mb,
production}}). On a promotion it copies the winner's bundle to production/ (the registry
artifact <dataset>-classifier), moves the old one to previous/, and rewrites the pointer
production.json (deployment/release/production.py). Otherwise the pointer and both folders
are left unchanged (the stage outputs are `persist: true`); with no pointer at all and no
passing candidate it fails, and the other datasets' stages still promote theirs.

A candidate is promoted when it passes every threshold, is not a rolled-back version
(pointer `rejected`), and either nothing is in production or its F1 is above production's
F1 (as recorded in the pointer) plus `margin`. A negative margin accepts a small regression.

Registering the promoted version in the git-tag registry (GTO) needs a commit:
`python -m deployment.release.registry` says what to commit and then tags it.

Run: python -m deployment.release.select digits
"""

import json
from pathlib import Path

from data_processing.core import cli
from data_processing.core.errors import CheckError, DataError, exit_on_error
from data_processing.core.io import write_json
from data_processing.core.params import (
    PARAMS_FILE,
    Params,
    load_params,
    name_clashes,
    read_params,
)
from deployment.release import production
from deployment.server import pointer as server_pointer
from deployment.server.bundle import file_sha256

RUNS = Path("models/runs")
HEADLINE = ("f1_macro", "accuracy", "ece")  # best.json's scores (and size_mb)


class SelectParams(Params):
    min_f1: float = 0.9
    min_precision: float = 0.9
    min_recall: float = 0.9
    margin: float = 0.0  # F1 a candidate must add over production's to replace it


def gate(metrics: dict, params: SelectParams) -> list[str]:
    """Return the reasons a candidate fails the gate (empty when it passes)."""
    test, reasons = metrics["test"], []
    for key, bound in (
        ("f1_macro", params.min_f1),
        ("precision_macro", params.min_precision),
        ("recall_macro", params.min_recall),
    ):
        if test[key] < bound:
            reasons.append(f"{key} {test[key]:.4f} < {bound}")
    return reasons


def choose(candidates: dict[str, dict], params: SelectParams) -> tuple[str | None, dict]:
    """Return (best passing name or None, {name: {test metrics, passed, reasons}})."""
    report = {
        name: {**m["test"], "passed": not gate(m, params), "reasons": gate(m, params)}
        for name, m in candidates.items()
    }
    order = ranked(report)
    return (order[0] if order else None), report


def ranked(report: dict) -> list[str]:
    """The passing candidates, best first: macro F1, then accuracy, then name."""
    passing = [n for n, r in report.items() if r["passed"]]
    key = lambda n: (report[n]["f1_macro"], report[n]["accuracy"], n)  # noqa: E731
    return sorted(passing, key=key, reverse=True)


def decide(best: str | None, report: dict, current: dict | None, sha: str | None, margin: float):
    """Return (promote?, reason) for the best passing candidate against production."""
    if best is None:
        return False, "no candidate passed the gate"
    f1 = report[best]["f1_macro"]
    if current is None:
        return True, f"{best} F1 {f1:.4f}: first production model"
    if sha == current["sha256"]:
        return False, f"{best} version {sha[:12]} is already in production"
    if sha in current.get("rejected", []):
        return False, f"{best} version {sha[:12]} was rolled back; not promoted again"
    bar = current["metrics"]["f1_macro"] + margin
    if f1 > bar:
        return True, f"{best} F1 {f1:.4f} > production {current['name']} F1 + margin {bar:.4f}"
    return False, (
        f"{best} F1 {f1:.4f} does not beat production {current['name']} F1 + margin {bar:.4f}"
    )


def eligible(report: dict, runs_dir: Path, rejected: list[str]):
    """The best passing candidate that was not rolled back, and its model.keras sha256; the
    best one when every passing candidate was rolled back; (None, None) when none passes."""
    first = None
    for name in ranked(report):
        sha = file_sha256(runs_dir / name / "bundle" / "model.keras")
        if sha not in rejected:
            return name, sha
        print(f"select: {name}: version {sha[:12]} was rolled back; skipped")
        first = first or (name, sha)
    return first or (None, None)


def read_candidates(runs_dir: Path, grid: dict, dataset: str) -> tuple[dict, dict]:
    """({cell: its dataset, model and hparams}, {cell: its metrics}) for every cell of
    `dataset` in the grid of params.yaml (DataError when one has no metrics)."""
    if dataset not in grid["datasets"]:
        raise DataError(PARAMS_FILE, f"one of {grid['datasets']}", field="datasets", found=dataset)
    for name, owner in name_clashes(grid):
        raise DataError(
            PARAMS_FILE,
            "dataset names unlike every cell's name (each is a served model's name)",
            field="datasets",
            found=f"{name!r}, also the name of a cell of {owner!r}",
            hint="rename the dataset",
        )
    cells = {
        f"{dataset}-{m}-{h}": {"dataset": dataset, "model": m, "hparams": h}
        for m in grid["models"]
        for h in grid["hparams"]
    }
    candidates = {}
    for name in cells:
        path = runs_dir / name / "eval" / "metrics.json"
        if not path.is_file():
            raise DataError(path, "the metrics of every cell", found="no such file")
        candidates[name] = json.loads(path.read_text())
    return cells, candidates


def current_production(pointer: Path, runs_dir: Path) -> tuple[dict | None, list[str]]:
    """(the pointer, when its folder holds its model; the versions rolled back). A fresh
    clone has the pointer (in git) but not its folder (in the DVC cache): when the cell's own
    run holds the same model.keras, the folder is restored from it and the pointer kept
    as it is, so a clean `dvc repro` leaves the pointer's bytes, and git, unchanged."""
    current = production.read(pointer)
    rejected = current.get("rejected", []) if current else []
    folder = production.folders(pointer)[0]
    if current and production.bundle_sha256(folder) != current.get("sha256"):
        run = runs_dir / current.get("name", "")
        if production.bundle_sha256(run / "bundle") == current.get("sha256"):
            production.restore(pointer, run / "bundle", run / "eval" / "samples.json")
            print(f"select: {folder} restored from {run / 'bundle'} (the pointer's model)")
            return current, rejected
        print(f"select: {folder} does not hold {pointer}'s model; choosing afresh")
        current = None  # an older pointer format, or a folder lost: no production to beat
    return current, rejected


def report(pointer: Path, params: SelectParams, best, promote: bool, reason: str, candidates):
    """Write gate.json beside the pointer; print how many pass and why each other fails."""
    gate = {"gate": params.model_dump(), "selected": best, "promoted": promote}
    where = pointer.parent / "gate.json"
    write_json(where, {**gate, "reason": reason, "candidates": candidates})
    passing = sum(r["passed"] for r in candidates.values())
    print(f"select: {pointer.parent.name}: {passing} of {len(candidates)} cells pass ({where})")
    for name, r in sorted(candidates.items()):
        if not r["passed"]:
            print(f"select: {name}: F1 {r['f1_macro']:.4f} fails: " + "; ".join(r["reasons"]))


def headline(dataset: str, pointer: Path, verdicts: dict, candidates: dict) -> None:
    """best.json beside the pointer: the dataset's best cell by the gate's ranking (passing or
    not: what the grid reached) and what is in production, for `dvc exp show`."""
    order = sorted(verdicts, key=lambda n: (verdicts[n]["f1_macro"], verdicts[n]["accuracy"], n))
    best = order[-1]
    test = candidates[best]["test"]
    scores = {k: round(test[k], 4) if k in test else None for k in HEADLINE}
    size = candidates[best].get("profile", {}).get("size_mb")
    current = production.read(pointer)
    serving = (
        f"{current['model']}-{current['hparams']}@{current['version'][:8]}" if current else "-"
    )
    row = {"best": best.removeprefix(f"{dataset}-"), **scores, "size_mb": size}
    write_json(pointer.parent / "best.json", {dataset: {**row, "production": serving}})


@exit_on_error
def main() -> None:
    (dataset,) = cli.parse(__doc__, ("dataset", "a dataset of params.yaml `datasets`"))
    select(dataset, RUNS, server_pointer.of(dataset))


def select(dataset: str, runs_dir: Path, pointer: Path) -> None:
    """The gate for `dataset`'s cells under runs_dir; promote into `pointer` (module doc)."""
    params = load_params("select", SelectParams)
    cells, candidates = read_candidates(runs_dir, read_params(), dataset)
    _, verdicts = choose(candidates, params)
    current, rejected = current_production(pointer, runs_dir)
    best, sha = eligible(verdicts, runs_dir, rejected)
    promote, reason = decide(best, verdicts, current, sha, params.margin)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    report(pointer, params, best, promote, reason, verdicts)
    if not promote:
        if current is None:
            raise CheckError(
                pointer,
                f"a candidate of {dataset} that passes the gate in params.yaml `select`",
                found="none, and no previous pointer to keep",
            )
        print(f"select: {reason}; {pointer} left unchanged")
        cell = runs_dir / current["name"]
        if production.refresh(pointer, cell / "bundle", cell / "eval" / "samples.json"):
            print(f"select: {current['name']} re-exported: production's bundle files refreshed")
    else:
        entry = {"name": best, "version": sha[:12], "sha256": sha, **cells[best]}
        entry["metrics"] = candidates[best]["test"]
        bundle, samples = runs_dir / best / "bundle", runs_dir / best / "eval" / "samples.json"
        production.install(pointer, bundle, samples, entry, reason)
        print(f"select: promoted: {reason} -> {pointer}")
        print(f"select: to register it: commit, then run reprovision registry {dataset}")
    headline(dataset, pointer, verdicts, candidates)


if __name__ == "__main__":
    main()
