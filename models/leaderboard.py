"""The workspace's cells in one compact table: what `make run` ends with.

Reads models/metrics/<cell>.json (evaluate's headline: what `dvc exp show` shows, the same
figures), the warnings evaluate's checks raise from models/runs/<cell>/eval/metrics.json
(predictions collapsed onto one class, accuracy not above chance), inference ms per image at
batch 1 from models/runs/<cell>/logs/profile.json when the cell ran on this machine (a
timing, not in dvc.lock), and deployment/production.json. One row per cell, best macro F1
first. The promoted cell is marked * when production serves this very training of it
(the same model.keras); when the gate kept an earlier, better model, a last line says so.

Run: python -m models.leaderboard
"""

import hashlib
import json
from pathlib import Path

from data_processing.core import cli
from models.common.metrics import health_warnings
from models.common.paths import METRICS, POINTER, RUNS

HEADLINE = ("accuracy", "f1_macro", "ece", "size_mb")  # evaluate.headline's keys


def production() -> dict:
    """deployment/production.json, or {} before the first promotion."""
    return json.loads(POINTER.read_text()) if POINTER.is_file() else {}


def serves(pointer: dict, cell_name: str) -> bool:
    """Whether production serves the workspace's current training of the cell."""
    if pointer.get("name") != cell_name:
        return False
    model = RUNS / cell_name / "bundle" / "model.keras"
    return model.is_file() and hashlib.sha256(model.read_bytes()).hexdigest() == pointer["sha256"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def rows(pointer: dict | None = None) -> list[dict]:
    """One row per models/metrics/*.json, best macro F1 first; `pointer`: production()."""
    pointer = production() if pointer is None else pointer
    found = []
    for path in sorted(METRICS.glob("*.json")):
        name = path.stem
        headline = _read(path).get(name, {})
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


def table(found: list[dict], pointer: dict | None = None) -> str:
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
    if any(r["promoted"] for r in found):
        lines.append("* promoted to production (deployment/production.json)")
    elif pointer and pointer.get("name"):  # the gate kept a better, earlier model
        f1 = pointer.get("metrics", {}).get("f1_macro", 0.0)
        lines.append(
            f"production: {pointer['name']} version {pointer.get('version', '?')} "
            f"(macro F1 {f1:.4f}), an earlier training\n"
            "  that no cell here beat (deployment/production.json)"
        )
    lines.append("ms/image: batch 1 on this machine (models/runs/<cell>/logs/, not in dvc.lock)")
    return "\n".join(lines)


def main() -> None:
    cli.parse(__doc__)
    pointer = production()
    found = rows(pointer)
    print(table(found, pointer) if found else "no evaluated cells yet: run `dvc repro`")


if __name__ == "__main__":
    main()
