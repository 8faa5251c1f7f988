"""The workspace's cells, a compact table per dataset: what `make run` ends with.

Reads models/metrics/<cell>.json (evaluate's headline: what `dvc exp show` shows, the same
figures), the warnings evaluate's checks raise from models/runs/<cell>/eval/metrics.json
(predictions collapsed onto one class, accuracy not above chance), inference ms per image at
batch 1 from models/runs/<cell>/logs/profile.json when the cell ran on this machine (a
timing, not in dvc.lock), and each dataset's deployment/<dataset>/production.json. One table
per dataset of params.yaml (a dataset's cells are never ranked against another's), best macro
F1 first. The promoted cell is marked * when production serves this very training of it (the
same model.keras); when the gate kept an earlier, better model, a line says so.

Run: reprovision leaderboard
"""

import hashlib
import json
from pathlib import Path

from data_processing.core import cli
from data_processing.core.params import read_params
from models.common.metrics import health_warnings
from models.common.paths import METRICS, RUNS

HEADLINE = ("accuracy", "f1_macro", "ece", "size_mb")  # evaluate.headline's keys


def production(dataset: str) -> dict:
    """deployment/<dataset>/production.json, or {} before its first promotion."""
    return _read(Path("deployment") / dataset / "production.json")


def serves(pointer: dict, cell_name: str) -> bool:
    """Whether production serves the workspace's current training of the cell."""
    if pointer.get("name") != cell_name:
        return False
    model = RUNS / cell_name / "bundle" / "model.keras"
    return model.is_file() and hashlib.sha256(model.read_bytes()).hexdigest() == pointer["sha256"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def rows(dataset: str, pointer: dict | None = None) -> list[dict]:
    """One row per cell of `dataset` with a models/metrics/<cell>.json, best macro F1 first;
    `pointer`: production(dataset)."""
    pointer = production(dataset) if pointer is None else pointer
    grid = read_params()
    names = [f"{dataset}-{m}-{h}" for m in grid.get("models", {}) for h in grid.get("hparams", {})]
    found = []
    for name in (n for n in names if (METRICS / f"{n}.json").is_file()):
        headline = _read(METRICS / f"{name}.json")
        details = _read(RUNS / name / "eval" / "metrics.json")
        timing = _read(RUNS / name / "logs" / "profile.json")  # this machine's, if it ran here
        found.append(
            {
                "cell": name,
                "promoted": serves(pointer, name),
                **{key: headline.get(key) for key in HEADLINE},
                "ms_per_image": timing.get("infer_ms_b1"),
                "warnings": health_warnings(details.get("test", {})),
            }
        )
    return sorted(found, key=lambda r: (-(r["f1_macro"] or 0), r["cell"]))


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(dataset: str, found: list[dict], pointer: dict | None = None) -> str:
    """Plain text, about 75 characters wide; warnings on their own lines."""
    width = max([len(r["cell"]) for r in found] + [4]) + 2
    head = f"{'cell':<{width}}{'accuracy':>9}{'macro F1':>10}{'ECE':>8}{'MB':>7}{'ms/image':>10}"
    lines = [head]
    for r in found:
        mark = "*" if r["promoted"] else " "
        lines.append(
            f"{mark}{r['cell']:<{width - 1}}{_cell(r['accuracy'], '>9.4f')}"
            f"{_cell(r['f1_macro'], '>10.4f')}{_cell(r['ece'], '>8.4f')}"
            f"{_cell(r['size_mb'], '>7.2f')}{_cell(r['ms_per_image'], '>10.2f')}"
        )
        lines += [f"   warning: {w}" for w in r["warnings"]]
    where = f"deployment/{dataset}/production.json"
    if any(r["promoted"] for r in found):
        lines.append(f"* promoted to production ({where})")
    elif pointer and pointer.get("name"):  # the gate kept a better, earlier model
        f1 = pointer.get("metrics", {}).get("f1_macro", 0.0)
        lines.append(
            f"production: {pointer['name']} version {pointer.get('version', '?')} "
            f"(macro F1 {f1:.4f}), an earlier training\n"
            f"  that no cell here beat ({where})"
        )
    else:
        lines.append(f"no production model for {dataset}: no cell passed the gate ({where})")
    return "\n".join(lines)


def table_command(datasets: list[str]) -> str:
    """The `dvc exp show` that fits a 200-column terminal: each dataset's best.json (its best
    cell and production model) and the params that changed; every per-cell column is left to
    `dvc metrics diff`, since ten cells of headline never fit."""
    names = "|".join(datasets)
    keep = f"({names})\\.(best|f1_macro|production)$"
    drop = f".*/|({names})\\.|Created|Executor"  # the dates and executors cost 30 columns
    return f"dvc exp show --only-changed --drop '{drop}' --keep '{keep}'"


def next_steps(datasets: list[str], cell: str | None) -> str:
    """What to run next, each command whole (tests/test_readme.py runs them)."""
    example = cell or "<dataset>-<model>-<hparams>"
    hparams = example.rsplit("-", 1)[-1]
    rows = [
        (table_command(datasets), "the experiments: each dataset's best cell, what changed"),
        (
            f"dvc exp run -S hparams.{hparams}.epochs=5 export@{example}",
            "an experiment on one cell (only it retrains)",
        ),
        ("dvc metrics diff && dvc plots diff", "what it changed, cell by cell, against HEAD"),
        ("reprovision keep", "commit the best experiment (git log keeps the results)"),
        ("dvc plots show", "curves, confusion, failures -> dvc_plots/index.html"),
        ("reprovision serve", "every dataset's production model on 127.0.0.1:8080"),
    ]
    return "Next:\n" + "\n".join(f"  {command}\n      {what}" for command, what in rows)


def main(argv: list[str] | None = None) -> None:
    cli.parse(__doc__, argv=argv)
    datasets = read_params().get("datasets") or []
    tables, first = [], None
    for dataset in datasets:
        found = rows(dataset)
        if found:
            first = first or next((r["cell"] for r in found if "quick" in r["cell"]), None)
            tables.append(f"{dataset}:\n" + table(dataset, found, production(dataset)))
    if not tables:
        print("no evaluated cells yet: run `dvc repro`")
        return
    print("\n\n".join(tables))
    print("ms/image: batch 1 on this machine (models/runs/<cell>/logs/, not in dvc.lock)\n")
    print(next_steps(datasets, first))


if __name__ == "__main__":
    main()
