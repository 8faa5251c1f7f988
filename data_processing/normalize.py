"""Normalize one raw dataset into the project's annotation JSON, one file per split.

Reads datasets/raw/<name>/ (image headers only) and writes <out_dir>/<split>.json.
Labelled feedback from the prediction server (datasets/raw/feedback) joins the train split
of the dataset params `feedback.dataset` names (data_processing/feedback.py).
The whole folder is written aside and renamed into place: no half-written output.
The source format is params `normalize.formats.<name>`; unlisted datasets use "auto", which
detects it (sources.detect). Fixes an importer made (info["warnings"]) are printed to stderr.

Run: python -m data_processing.normalize datasets/raw/digits datasets/normalized/digits
"""

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from data_processing import feedback, schema, sources
from data_processing.core import cli
from data_processing.core.errors import DataError, exit_on_error
from data_processing.core.io import staged_dir
from data_processing.core.params import Params, load_params

AUTO = "auto"


class NormalizeParams(Params):
    formats: dict[str, str] = {}  # dataset name -> source format; unlisted datasets: "auto"
    # VOC <bndbox> corners: zero_based = continuous, x = xmin, w = xmax - xmin (Datumaro, CVAT,
    # globox); one_based = the VOC devkit's inclusive pixels, x = xmin - 1, w = xmax - xmin + 1
    voc_coordinates: Literal["zero_based", "one_based"] = "zero_based"

    def options(self, fmt: str) -> dict[str, str]:
        """Keyword arguments these params give importer `fmt`'s parse (only voc takes any)."""
        return {"coordinates": self.voc_coordinates} if fmt == "voc" else {}


def resolve_format(raw_dir: Path, fmt: str) -> str:
    """Return the importer name for `fmt`: itself when known, the detected one for "auto"."""
    if not Path(raw_dir).is_dir():
        raise DataError(
            raw_dir,
            "a dataset folder",
            found="no such folder",
            hint="list datasets under datasets/raw/ in params.yaml `datasets`",
        )
    if fmt == AUTO:
        return sources.detect(Path(raw_dir))
    if fmt not in sources.available():
        raise DataError(
            "params.yaml",
            f"a source format: {AUTO} or one of {sources.available()}",
            field=f"normalize.formats.{Path(raw_dir).name}",
            found=repr(fmt),
        )
    return fmt


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a parse builds many acyclic objects, and
    collecting them midway only costs time (bench/README.md, ingest)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def normalize(
    raw_dir: Path, fmt: str, options: dict[str, str] | None = None
) -> dict[str, schema.Dataset]:
    """Parse `raw_dir` with importer `fmt` ("auto": detected) and check every split's schema.

    `options`: keyword arguments for the importer's parse (NormalizeParams.options).
    """
    return parse(raw_dir, resolve_format(raw_dir, fmt), options)


def parse(raw_dir: Path, fmt: str, options: dict[str, str] | None = None) -> dict:
    """`normalize` with a resolved importer name. A split that fails the schema (ids,
    references, boxes, counts) is refused on its first problem, so no such file is written;
    validate checks the files it reads again and lists every problem in its report."""
    with _gc_paused():
        splits = sources.get(fmt).parse(Path(raw_dir), Path(raw_dir).name, **(options or {}))
    for split, dataset in splits.items():
        if problems := schema.validate(dataset):
            raise DataError(f"{raw_dir} ({split})", "a consistent dataset", found=problems[0])
    return splits


def write(splits: dict[str, schema.Dataset], out_dir: Path) -> None:
    """Write every split into a temporary folder, then swap it in."""
    with staged_dir(out_dir) as tmp, _gc_paused():
        for split, dataset in splits.items():
            schema.save(dataset, tmp / f"{split}.json")


@exit_on_error
def main() -> None:
    raw_dir, out_dir = cli.paths(
        __doc__,
        cli.RAW_DIR,
        ("out_dir", "where <split>.json are written (datasets/normalized/<name>)"),
    )
    params = load_params("normalize", NormalizeParams)
    fmt = resolve_format(raw_dir, params.formats.get(raw_dir.name, AUTO))
    splits = parse(raw_dir, fmt, params.options(fmt))
    if "train" in splits:
        merge = load_params("feedback", feedback.FeedbackParams)
        splits["train"] = feedback.merge(splits["train"], raw_dir, merge)
    write(splits, out_dir)
    for warning in (w for d in splits.values() for w in d.info.get("warnings", ())):
        print(f"warning: {warning}", file=sys.stderr)
    counts = ", ".join(f"{s}: {len(d.images)} images" for s, d in splits.items())
    print(f"normalize: {raw_dir.name} ({fmt}) -> {out_dir} ({counts})")


if __name__ == "__main__":
    main()
