"""The results tables of README.md and docs/pages/results.md, written from the metrics.

Each file holds one generated block between the BEGIN and END markers: a table per dataset of
params.yaml, built from what git tracks after `make run` (models/metrics/<cell>.json and
deployment/<dataset>/production.json), so a fresh clone renders the same text. `--check`
changes nothing and exits 1 when a file's block differs from the metrics, naming the file and
the first line that differs (tests/test_results.py runs it).

Run: reprovision results [--check]
"""

import json
import sys
from pathlib import Path

from data_processing.core import cli
from data_processing.core.params import read_params
from models.common.paths import METRICS

FILES = (Path("README.md"), Path("docs/pages/results.md"))
BEGIN = "<!-- results: begin (written by `reprovision results` from the metrics; do not edit) -->"
END = "<!-- results: end -->"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def dataset_table(dataset: str, params: dict) -> str:
    """Markdown: the dataset's cells, best macro F1 first, the production cell marked."""
    production = _read(Path("deployment") / dataset / "production.json").get("name")
    names = [f"{dataset}-{m}-{h}" for m in params.get("models", {}) for h in params["hparams"]]
    found = [(n, _read(METRICS / f"{n}.json")) for n in names if (METRICS / f"{n}.json").is_file()]
    found.sort(key=lambda item: (-item[1].get("f1_macro", 0.0), item[0]))
    lines = [
        "| cell | accuracy | macro F1 | ECE | size MB |",
        "|---|---|---|---|---|",
    ]
    for name, m in found:
        shown = f"**{name}** (production)" if name == production else name
        lines.append(
            f"| {shown} | {m['accuracy']:.4f} | {m['f1_macro']:.4f} | {m['ece']:.4f} "
            f"| {m['size_mb']:.3f} |"
        )
    if not found:
        lines.append("| no evaluated cells: run `make run` | | | | |")
    return "\n".join(lines)


def block(params: dict | None = None) -> str:
    """The generated text between the markers (markers included)."""
    params = read_params() if params is None else params
    parts = [BEGIN]
    for dataset in params.get("datasets") or []:
        parts += [f"**{dataset}** (test split; `models/metrics/<cell>.json`):", ""]
        parts += [dataset_table(dataset, params), ""]
    return "\n".join([*parts, END])


def rewrite(text: str, new_block: str, path: Path) -> str:
    """`text` with its block replaced by `new_block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: expected the markers {BEGIN!r} ... {END!r}")
    return text[:start] + new_block + text[end + len(END) :]


def first_difference(old: str, new: str) -> str:
    for i, (a, b) in enumerate(zip(old.splitlines(), new.splitlines(), strict=False), 1):
        if a != b:
            return f"line {i} of the block says {a!r}, the metrics give {b!r}"
    return "the block's length differs from the metrics'"


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    new_block, stale = block(), []
    for path in FILES:
        text = path.read_text()
        try:
            updated = rewrite(text, new_block, path)
        except ValueError as err:
            sys.exit(f"results: {err}")
        if updated == text:
            continue
        if args.check:
            old = text[text.find(BEGIN) : text.find(END) + len(END)]
            stale.append(f"{path}: {first_difference(old, new_block)}")
        else:
            path.write_text(updated)
            print(f"results: wrote {path}")
    if stale:
        print("\n".join(stale), file=sys.stderr)
        print("results: run `reprovision results` to write them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
