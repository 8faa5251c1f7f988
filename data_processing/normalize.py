"""Normalize one raw dataset into the project's annotation JSON, one file per split.

Reads datasets/raw/<name>/ (image headers only) and writes <out_dir>/<split>.json.
The whole folder is written aside and renamed into place: no half-written output.

Run: python -m data_processing.normalize datasets/raw/digits datasets/normalized/digits
"""

import sys
from pathlib import Path

from data_processing import schema, sources
from data_processing.errors import DataError, exit_on_error
from data_processing.io import staged_dir
from data_processing.params import Params, load_params


class NormalizeParams(Params):
    formats: dict[str, str] = {}  # dataset name -> source format; unlisted datasets: "seed"


def normalize(raw_dir: Path, fmt: str) -> dict[str, schema.Dataset]:
    """Parse `raw_dir` with importer `fmt` and check the schema of every split."""
    if not Path(raw_dir).is_dir():
        raise DataError(
            raw_dir,
            "a dataset folder",
            found="no such folder",
            hint="list datasets under datasets/raw/ in params.yaml `datasets`",
        )
    splits = sources.get(fmt).parse(Path(raw_dir), Path(raw_dir).name)
    for split, dataset in splits.items():
        problems = schema.validate(dataset)
        if problems:
            raise DataError(f"{raw_dir} ({split})", "a consistent dataset", found=problems[0])
    return splits


def write(splits: dict[str, schema.Dataset], out_dir: Path) -> None:
    """Write every split into a temporary folder, then swap it in."""
    with staged_dir(out_dir) as tmp:
        for split, dataset in splits.items():
            schema.save(dataset, tmp / f"{split}.json")


@exit_on_error
def main() -> None:
    raw_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    fmt = load_params("normalize", NormalizeParams).formats.get(raw_dir.name, "seed")
    splits = normalize(raw_dir, fmt)
    write(splits, out_dir)
    counts = ", ".join(f"{s}: {len(d.images)} images" for s, d in splits.items())
    print(f"normalize: {raw_dir.name} ({fmt}) -> {out_dir} ({counts})")


if __name__ == "__main__":
    main()
