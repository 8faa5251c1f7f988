"""The workspace's cells in one compact table: what `make run` ends with.

Reads models/metrics/<cell>.json (evaluate's) and deployment/production.json. One row per
cell, best macro F1 first: accuracy, macro F1, parameters, inference ms per image at batch 1,
and the warnings evaluate's checks raise (predictions collapsed onto one class, accuracy not
above chance). The promoted cell is marked * when production serves this very training of it
(the same model.keras); when the gate kept an earlier, better model, a last line says so.

Run: python -m models.leaderboard
"""

import hashlib
import json

from data_processing.core import cli
from models.common.metrics import health_warnings
from models.common.paths import METRICS, POINTER, RUNS


def production() -> dict:
    """deployment/production.json, or {} before the first promotion."""
    return json.loads(POINTER.read_text()) if POINTER.is_file() else {}


def serves(pointer: dict, cell_name: str) -> bool:
    """Whether production serves the workspace's current training of the cell."""
    if pointer.get("name") != cell_name:
        return False
    model = RUNS / cell_name / "bundle" / "model.keras"
    return model.is_file() and hashlib.sha256(model.read_bytes()).hexdigest() == pointer["sha256"]


def rows(pointer: dict | None = None) -> list[dict]:
    """One row per models/metrics/*.json, best macro F1 first; `pointer`: production()."""
    pointer = production() if pointer is None else pointer
    found = []
    for path in sorted(METRICS.glob("*.json")):
        metrics = json.loads(path.read_text())
        test, profile = metrics.get("test", {}), metrics.get("profile", {})
        found.append(
            {
                "cell": path.stem,
                "promoted": serves(pointer, path.stem),
                "accuracy": test.get("accuracy"),
                "f1_macro": test.get("f1_macro"),
                "params": profile.get("params"),
                "ms_per_image": profile.get("infer_ms_b1"),
                "warnings": health_warnings(test),
            }
        )
    return sorted(found, key=lambda r: (-(r["f1_macro"] or 0), r["cell"]))


def table(found: list[dict], pointer: dict | None = None) -> str:
    """Plain text, about 70 characters wide; warnings on their own lines."""
    width = max([len(r["cell"]) for r in found] + [4]) + 2
    lines = [f"{'cell':<{width}}{'accuracy':>9}{'macro F1':>10}{'params':>11}{'ms/image':>10}"]
    for r in found:
        mark = "*" if r["promoted"] else " "
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        ms = f"{r['ms_per_image']:.2f}" if r["ms_per_image"] is not None else "-"
        lines.append(
            f"{mark}{r['cell']:<{width - 1}}{r['accuracy'] or 0:>9.4f}{r['f1_macro'] or 0:>10.4f}"
            f"{params:>11}{ms:>10}"
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
    return "\n".join(lines)


def main() -> None:
    cli.parse(__doc__)
    pointer = production()
    found = rows(pointer)
    print(table(found, pointer) if found else "no evaluated cells yet: run `dvc repro`")


if __name__ == "__main__":
    main()
