"""Validate one normalized dataset against its raw files; report in JSON, Markdown and HTML.

Reads datasets/raw/<name>/ (every image decoded once, in parallel over all cores, with a
progress bar on stderr; every mask) and the normalized <split>.json files. Writes into OUT_DIR:
validate.json (for machines), validate.md and validate.html (for people) and the PNGs they
show (samples.png; boxes.png and near_duplicates.png when there are any).

Errors fail the stage and write nothing; the report goes to stderr instead:
schema problems (ids, dangling references, boxes, counts), masks (missing, wrong size, unknown
values), unreadable or truncated images, images no record lists, test labels unknown to train,
and identical images in two splits (train/test leakage: the test score would be inflated).
Warnings go to the report: near duplicates across splits, duplicates within a split, class
imbalance, tiny or test-less classes, and fixes the importer made (info["warnings"]).
Duplicates are reported per group of identical images, near duplicates per pair of pHashes;
at most `max_listed` of each kind are listed, all are counted (validate.json `leakage`).
Thresholds are in params.yaml `validate`. Nothing compares all pairs of images, and memory
holds a few numbers per image, never whole pixels: 50,000 images validate like 5,000, only
longer (the label audit holds at most `label_audit.max_images` shrunk to 16x16: 256 bytes).

Once there are no errors, the label audit (data_processing/label_audit.py, params
`label_audit`) looks for mislabelled train images: label_audit.json (every suspect, ranked),
label_audit.png (the first ones) and a warning with the count. Given a fourth path, the same
picture goes there too, for `dvc plots` (datasets/plots/label_audit/<name>.png).

Run: python -m data_processing.validate datasets/raw/digits datasets/normalized/digits \
         datasets/reports/digits datasets/plots/label_audit/digits.png
"""

import os
import sys
from pathlib import Path

from pydantic import Field

from data_processing import checks, duplicates, label_audit, report, schema
from data_processing.core import cli
from data_processing.core.errors import DataError, exit_on_error
from data_processing.core.params import BaseParams, Params, load_params

SHOWN_WARNINGS = 3  # in the summary line's wake; validate.md has them all


class ValidateParams(Params):
    max_imbalance: float = 10.0  # warn when the largest class has this many times the smallest
    min_per_class: int = 5  # warn when a class has fewer training images than this
    # pHash Hamming distance (of 64 bits) for near duplicates; -1: off. At most 16: beyond,
    # unrelated photos match and the index (duplicates.near_pairs) would test most pairs.
    near_duplicate_distance: int = Field(4, ge=-1, le=16)
    max_listed: int = Field(20, ge=0)  # problems of one kind listed one by one; rest counted
    samples_per_class: int = 8  # images per class in samples.png
    box_samples: int = 6  # images drawn with their boxes in boxes.png


def load_splits(norm_dir: Path) -> dict[str, schema.Dataset]:
    """Read every <split>.json; train and test must be there."""
    order = {"train": 0, "val": 1, "test": 2}  # train first: messages read "train ... test"
    paths = sorted(Path(norm_dir).glob("*.json"), key=lambda p: (order.get(p.stem, 3), p.stem))
    splits = {p.stem: schema.load(p) for p in paths}
    if not {"train", "test"} <= splits.keys():
        raise DataError(norm_dir, "train.json and test.json", found=sorted(splits))
    return splits


def validate(
    raw_dir: Path,
    splits: dict[str, schema.Dataset],
    params: ValidateParams,
    processes: int | None = None,
) -> dict:
    """Run every check; return the report dict: errors, warnings, per-split stats, leakage.

    processes: decoding workers (None: all cores, or none for a few hundred images).
    """
    found = {"dataset": Path(raw_dir).name, "errors": [], "warnings": [], "splits": {}}
    scan_errors, scan = checks.scan_images(raw_dir, splits, processes)
    for split, dataset in splits.items():
        found["errors"] += checks.check_schema(split, dataset)
        found["errors"] += checks.check_masks(raw_dir, dataset)
        found["errors"] += scan_errors[split] + checks.check_unlisted(raw_dir, dataset)
        found["warnings"] += [f"{split}: {w}" for w in dataset.info.get("warnings", ())]
        found["splits"][split] = {
            "images": len(dataset.images),
            "boxes": len(dataset.annotations),
            **checks.image_stats(scan, split),
            "class_counts": dict(schema.class_counts(dataset)),
        }
    errors, warnings, found["leakage"] = duplicates.check_leakage(
        scan, params.near_duplicate_distance, params.max_listed
    )
    label_errors, label_warnings = checks.check_labels(
        splits["train"], splits["test"], params.max_imbalance, params.min_per_class
    )
    found["errors"] += errors + label_errors
    found["warnings"] += warnings + label_warnings
    return found


def fail_on_errors(raw_dir: Path, found: dict) -> None:
    """Print the report to stderr and raise DataError when it holds any error."""
    if found["errors"]:
        print(report.to_markdown(found), file=sys.stderr)
        raise DataError(
            raw_dir,
            "a dataset without errors",
            found=f"{len(found['errors'])} error(s), first: {found['errors'][0]}",
        )


def audit_labels(raw_dir: Path, train: schema.Dataset, found: dict) -> list[dict]:
    """Run the label audit (params `label_audit`, `base.seed`) on train; add its summary (with
    the first `max_listed` suspects) and its warning to `found`; return every suspect."""
    params = load_params("label_audit", label_audit.LabelAuditParams)
    audited = label_audit.audit(raw_dir, train, params, load_params("base", BaseParams).seed)
    issues = audited.pop("issues")
    found["label_audit"] = {**audited, "listed": issues[: params.max_listed]}
    if audited["inconclusive"]:
        found["warnings"].append(f"label audit inconclusive: {audited['inconclusive']}")
    elif audited["count"]:
        found["warnings"].append(
            f"label audit: {audited['count']} of {audited['audited']} audited train images may "
            f"be mislabelled ({audited['method']}); ranked in label_audit.json, the first ones "
            "drawn in label_audit.png"
        )
    return issues


def write_plot(raw_dir: Path, found: dict, path: Path) -> None:
    """label_audit.png (drawn even with no suspects: it says so) at `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    report.draw_label_issues(raw_dir, found["label_audit"]).save(tmp, "PNG", optimize=True)
    os.replace(tmp, path)


@exit_on_error
def main() -> None:
    raw_dir, norm_dir, out_dir, plot = cli.paths(
        __doc__,
        cli.RAW_DIR,
        cli.NORM_DIR,
        ("out_dir", "where the report is written (datasets/reports/<name>)"),
        (
            "plot",
            "optional: label_audit.png also here (datasets/plots/label_audit/<name>.png)",
            None,
        ),
    )
    params = load_params("validate", ValidateParams)
    splits = load_splits(norm_dir)
    found = validate(raw_dir, splits, params)
    fail_on_errors(raw_dir, found)
    issues = audit_labels(raw_dir, splits["train"], found)
    pictures = report.draw_pictures(
        raw_dir, splits, found, params.samples_per_class, params.box_samples
    )
    report.write_report(out_dir, found, pictures, {"label_audit.json": issues})
    if plot is not None:
        write_plot(raw_dir, found, plot)
    warnings = found["warnings"]
    print(f"validate: {raw_dir.name}: 0 errors, {len(warnings)} warning(s) -> {out_dir}")
    for warning in warnings[:SHOWN_WARNINGS]:
        print(f"  warning: {warning}")
    if len(warnings) > SHOWN_WARNINGS:
        print(f"  ... {len(warnings) - SHOWN_WARNINGS} more in {out_dir / 'validate.md'}")


if __name__ == "__main__":
    main()
