"""Select the production model: the best cell by test macro F1 among those that pass the gate.

Reads models/metrics/<cell>.json for every cell of the current params (datasets x models x
hparams).
Writes deployment/gate.json (every candidate, pass or fail, and why) and, when one passes,
the pointer deployment/production.json. When none passes it says so and leaves the
previous pointer unchanged (the stage output is `persist: true`); with no previous pointer
it fails.

Run: python -m deployment.select models/metrics models/runs deployment/production.json
"""

import json
import sys
from pathlib import Path

from data_processing.errors import DataError, exit_on_error
from data_processing.io import write_json
from data_processing.params import Params, load_params, read_params
from deployment.bundle import file_sha256

GATE_REPORT = Path("deployment/gate.json")


class SelectParams(Params):
    min_f1: float = 0.9
    min_precision: float = 0.9
    min_recall: float = 0.9


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
    passing = [n for n, r in report.items() if r["passed"]]
    best = max(
        passing, key=lambda n: (report[n]["f1_macro"], report[n]["accuracy"], n), default=None
    )
    return best, report


@exit_on_error
def main() -> None:
    metrics_dir, runs_dir, pointer = (Path(a) for a in sys.argv[1:4])
    params, grid = load_params("select", SelectParams), read_params()
    cells = {
        f"{d}-{m}-{h}": {"dataset": d, "model": m, "hparams": h}
        for d in grid["datasets"]
        for m in grid["models"]
        for h in grid["hparams"]
    }
    candidates = {}
    for name in cells:
        path = metrics_dir / f"{name}.json"
        if not path.is_file():
            raise DataError(path, "the metrics of every cell", found="no such file")
        candidates[name] = json.loads(path.read_text())
    best, report = choose(candidates, params)
    write_json(GATE_REPORT, {"gate": params.model_dump(), "selected": best, "candidates": report})
    for name, r in sorted(report.items()):
        print(
            f"select: {name}: F1 {r['f1_macro']:.4f} "
            f"{'passes' if r['passed'] else 'fails: ' + '; '.join(r['reasons'])}"
        )
    if best is None:
        if pointer.exists():
            print(f"select: no candidate passed the gate; {pointer} left unchanged")
            return
        raise DataError(
            pointer,
            "a candidate that passes the gate in params.yaml `select`",
            found="none, and no previous pointer to keep",
        )
    bundle = runs_dir / best / "bundle"
    write_json(
        pointer,
        {
            "name": best,
            **cells[best],
            "bundle": bundle.as_posix(),
            "sha256": file_sha256(bundle / "model.keras"),
            "eval_predictions": (runs_dir / best / "eval" / "predictions.json").as_posix(),
            "metrics": candidates[best]["test"],
        },
    )
    print(f"select: {best} -> {pointer}")


if __name__ == "__main__":
    main()
