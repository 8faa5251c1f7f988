"""The sweep leaderboard, read from DVC's own experiment records (`dvc exp show --json`)."""

import json
import subprocess
from pathlib import Path

from models.common.paths import METRICS, Cell

COLUMNS = ("experiment", "f1_macro", "accuracy", "ece", "size_mb", "timestamp")
HEADLINE = ("f1_macro", "accuracy", "ece", "size_mb")  # evaluate.headline's keys


def experiments(show: list[dict]) -> dict[str, dict]:
    """Flatten `dvc exp show --json` into experiment name -> its latest data record."""
    found = {}
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs and revs[0].get("data"):
                found[exp.get("name") or revs[0]["name"]] = revs[0]["data"]
    return found


def collect(cells: dict[str, Cell], show: list[dict] | None = None) -> list[dict]:
    """One row per finished experiment of `cells` (name -> cell), best macro F1 first."""
    if show is None:
        out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        show = json.loads(out.stdout or "[]")
    rows = []
    for name, data in experiments(show).items():
        cell = cells.get(name)
        if cell is None:
            continue
        metrics = (data.get("metrics") or {}).get((METRICS / f"{cell.name}.json").as_posix())
        if not metrics or "data" not in metrics:
            continue
        m = metrics["data"]
        if "f1_macro" not in m:
            continue
        headline = {key: m.get(key) for key in HEADLINE}
        rows.append({"experiment": name, **headline, "timestamp": data.get("timestamp")})
    return sorted(rows, key=lambda r: (-r["f1_macro"], r["experiment"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| rank | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for rank, row in enumerate(rows, start=1):
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    """Macro F1 and expected calibration error per experiment, best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["experiment"] for r in rows][::-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5), sharey=True)
    ax1.barh(names, [r["f1_macro"] for r in rows][::-1])
    ax1.set(xlabel="test macro F1", xlim=(0, 1))
    ax2.barh(names, [r["ece"] or 0 for r in rows][::-1], color="tab:orange")
    ax2.set(xlabel="expected calibration error (lower: better calibrated)")
    fig.suptitle("sweep leaderboard")
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def write(rows: list[dict], out_dir: Path) -> str:
    """Write leaderboard.md and leaderboard.png into out_dir; return the Markdown table."""
    table = markdown(rows)
    (out_dir / "leaderboard.md").write_text("# Sweep leaderboard (test split)\n\n" + table)
    if rows:
        chart(rows, out_dir / "leaderboard.png")
    return table
