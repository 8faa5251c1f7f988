"""Every cell's training curves in one chart per metric: what `dvc plots show` compares.

Reads models/plots/{accuracy,loss}/<cell>.tsv (epoch, train, val; written by train) and
writes models/plots/compare/val_accuracy.json and val_loss.json: one record {epoch, cell,
value} per cell and epoch, which the top-level plots of dvc.yaml draw with the template
.dvc/plots/lines_by_cell.json (one line per cell, colored by cell).

Run: python -m models.compare models/plots models/plots/compare
"""

import csv
from pathlib import Path

from data_processing.core import cli
from data_processing.core.io import staged_dir, write_json

METRICS = ("accuracy", "loss")


def curves(plots_dir: Path, metric: str, split: str = "val") -> list[dict]:
    """{epoch, cell, value} for every cell's `split` column of <plots_dir>/<metric>/*.tsv."""
    records = []
    for path in sorted((Path(plots_dir) / metric).glob("*.tsv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                value = row.get(split)
                if value not in (None, ""):
                    records.append(
                        {"epoch": int(row["epoch"]), "cell": path.stem, "value": float(value)}
                    )
    return records


def main() -> None:
    plots_dir, out_dir = cli.paths(
        __doc__,
        ("plots_dir", "the per-cell plots (models/plots)"),
        ("out_dir", "where the comparison files are written (models/plots/compare)"),
    )
    with staged_dir(out_dir) as tmp:
        for metric in METRICS:
            write_json(tmp / f"val_{metric}.json", curves(plots_dir, metric))
    print(f"compare: {len(list((plots_dir / 'loss').glob('*.tsv')))} cells -> {out_dir}")


if __name__ == "__main__":
    main()
