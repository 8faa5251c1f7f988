"""Validate one normalized dataset against its raw images; write a JSON and a Markdown report.

Errors (unreadable or truncated images, images missing from or extra to the annotations,
test labels unknown to train, schema problems) fail the stage and write nothing.
Warnings (class imbalance, tiny classes) go to the report.

Run: python -m data_processing.validate datasets/raw/digits datasets/normalized/digits \
         datasets/reports/digits
"""

import json
import sys
from collections import Counter
from pathlib import Path

from data_processing import schema
from data_processing.errors import DataError, exit_on_error
from data_processing.images import decode, is_image, read_header
from data_processing.params import Params, load_params


class ValidateParams(Params):
    max_imbalance: float = 10.0  # warn when the largest class has this many times the smallest
    min_per_class: int = 5  # warn when a class has fewer training images than this


def check_split(raw_dir: Path, dataset: schema.Dataset) -> tuple[list[str], dict]:
    """Decode every image of one split; return (errors, stats)."""
    errors = [f"{dataset.info.get('split')}: {p}" for p in schema.validate(dataset)]
    sizes, modes = Counter(), Counter()
    for image in dataset.images:
        path = raw_dir / image.file_name
        try:
            arr = decode(path, channels=3)
        except DataError as err:
            errors.append(f"{err} (listed at {image.source})")
            continue
        if arr.shape[:2] != (image.height, image.width):
            errors.append(
                f"{path}: expected {image.width}x{image.height} as annotated; "
                f"found {arr.shape[1]}x{arr.shape[0]}"
            )
        sizes[f"{arr.shape[1]}x{arr.shape[0]}"] += 1
        modes[read_header(path)[2]] += 1
    folders = {Path(i.file_name).parent for i in dataset.images}
    listed = {i.file_name for i in dataset.images}
    for folder in sorted(folders):
        for path in sorted((raw_dir / folder).iterdir()):
            rel = (folder / path.name).as_posix()
            if path.is_file() and is_image(path) and rel not in listed:
                errors.append(f"{path}: expected an annotation for this image; found none")
    stats = {
        "images": len(dataset.images),
        "class_counts": dict(schema.class_counts(dataset)),
        "sizes": dict(sizes.most_common()),
        "modes": dict(modes.most_common()),
    }
    return errors, stats


def check_labels(
    train: schema.Dataset, test: schema.Dataset, params: ValidateParams
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) about the label distributions."""
    errors, warnings = [], []
    train_counts, test_counts = schema.class_counts(train), schema.class_counts(test)
    names = {c.id: c.name for c in test.categories}
    for image in test.images:
        unknown = [names[c] for c in image.labels or () if train_counts[names[c]] == 0]
        if unknown:
            errors.append(
                f"{image.source} ({image.file_name}): label {unknown[0]!r} is in "
                f"test but not in train; expected one of "
                f"{sorted(n for n, k in train_counts.items() if k)}"
            )
    present = [k for k in train_counts.values() if k > 0]
    if present and max(present) > params.max_imbalance * min(present):
        warnings.append(
            f"class imbalance: largest/smallest train class = "
            f"{max(present)}/{min(present)} > {params.max_imbalance}"
        )
    for name, count in train_counts.items():
        if 0 < count < params.min_per_class:
            warnings.append(f"class {name!r} has only {count} training images")
    for name, count in test_counts.items():
        if count == 0 and train_counts[name] > 0:
            warnings.append(f"class {name!r} has no test images")
    return errors, warnings


def validate(raw_dir: Path, norm_dir: Path, params: ValidateParams) -> dict:
    """Return the report dict: errors, warnings and per-split statistics."""
    splits = {p.stem: schema.load(p) for p in sorted(Path(norm_dir).glob("*.json"))}
    if not {"train", "test"} <= splits.keys():
        raise DataError(norm_dir, "train.json and test.json", found=sorted(splits))
    report = {"dataset": Path(raw_dir).name, "errors": [], "warnings": [], "splits": {}}
    for split, dataset in splits.items():
        errors, stats = check_split(Path(raw_dir), dataset)
        report["errors"] += errors
        report["splits"][split] = stats
    errors, warnings = check_labels(splits["train"], splits["test"], params)
    report["errors"] += errors
    report["warnings"] += warnings
    return report


def to_markdown(report: dict) -> str:
    """Render the report for people."""
    lines = [f"# Validation report: {report['dataset']}", ""]
    lines += ["## Errors", *([f"- {e}" for e in report["errors"]] or ["none"]), ""]
    lines += ["## Warnings", *([f"- {w}" for w in report["warnings"]] or ["none"]), ""]
    for split, stats in report["splits"].items():
        lines += [f"## {split}: {stats['images']} images", "", "| class | images |", "|---|---|"]
        lines += [f"| {n} | {k} |" for n, k in stats["class_counts"].items()]
        lines += ["", f"sizes: {stats['sizes']}; modes: {stats['modes']}", ""]
    return "\n".join(lines)


@exit_on_error
def main() -> None:
    raw_dir, norm_dir, out_dir = (Path(a) for a in sys.argv[1:4])
    report = validate(raw_dir, norm_dir, load_params("validate", ValidateParams))
    if report["errors"]:
        print(to_markdown(report), file=sys.stderr)
        raise DataError(
            raw_dir,
            "a dataset without errors",
            found=f"{len(report['errors'])} error(s), first: {report['errors'][0]}",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "validate.md").write_text(to_markdown(report), encoding="utf-8")
    (out_dir / "validate.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"validate: {raw_dir.name}: 0 errors, {len(report['warnings'])} warning(s) -> {out_dir}")


if __name__ == "__main__":
    main()
