"""The label audit (data_processing/label_audit.py), run by the real validate stage on generated
data with planted label errors: it finds most of them, and few on clean data; the report
carries a warning with the count, the ranked JSON and the thumbnails. Small, odd data (a
class of one image, a class smaller than the folds, multi-label) is audited or skipped with a
note, never a crash."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, edit_params, run_stage, write_seed_dataset
from PIL import Image

from data_processing import schema
from data_processing.label_audit import LabelAuditParams, audit
from data_processing.records import Record, assemble, category_list

PER_CLASS = {"train": 40, "test": 8}  # 120 train images, 3 classes
FLIPPED = 12  # train labels changed to another class: 10%


def flip_labels(raw: Path, n: int, seed: int = 7) -> set[str]:
    """Give n train images (chosen by seed) another class in groundtruth.csv; return them."""
    path = raw / "train" / "groundtruth.csv"
    rows = list(csv.reader(path.open()))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.arange(1, len(rows)), n, replace=False)
    for row in chosen.tolist():
        others = [c for c in CLASSES if c != rows[row][1]]
        rows[row][1] = others[int(rng.integers(len(others)))]
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return {f"train/{rows[row][0]}" for row in chosen.tolist()}


def validate_stage(project: Path, name: str) -> dict:
    """normalize and validate `name` as dvc.yaml runs them; return validate.json."""
    raw, norm = f"datasets/raw/{name}", f"datasets/normalized/{name}"
    plot = f"datasets/plots/label_audit/{name}.png"
    for module, *args in (
        ("data_processing.normalize", raw, norm),
        ("data_processing.validate", raw, norm, f"datasets/reports/{name}", plot),
    ):
        proc = run_stage(module, *args, cwd=project)
        assert proc.returncode == 0, f"{module}: {proc.stderr[-3000:]}"
    return json.loads((project / f"datasets/reports/{name}/validate.json").read_text())


def test_planted_label_errors_are_found(project: Path) -> None:
    planted = flip_labels(write_seed_dataset(project / "datasets/raw/noisy", PER_CLASS), FLIPPED)
    found = validate_stage(project, "noisy")
    report = project / "datasets/reports/noisy"
    issues = json.loads((report / "label_audit.json").read_text())
    suspects = {issue["file"] for issue in issues}
    hits = len(suspects & planted)
    recall, precision = hits / len(planted), hits / max(1, len(suspects))
    print(
        f"label audit on {FLIPPED} planted flips of 120: recall {recall:.2f}, precision "
        f"{precision:.2f} ({len(suspects)} suspects)"
    )
    assert recall >= 0.8 and precision >= 0.7, (recall, precision, sorted(suspects))
    assert [i["rank"] for i in issues] == list(range(1, len(issues) + 1))
    assert [i["quality"] for i in issues] == sorted(i["quality"] for i in issues)
    for issue in issues:
        assert issue["given"] != issue["suggested"] and issue["source"].startswith("train/")
    summary = found["label_audit"]
    assert summary["count"] == len(issues) and summary["audited"] == 120
    assert summary["kappa"] >= 0.5 and summary["inconclusive"] is None
    assert summary["folds"] == 5 and summary["listed"] == issues[:32]
    assert not found["errors"]  # a warning, not an error: the stage passed
    (warning,) = [w for w in found["warnings"] if w.startswith("label audit:")]
    assert f"{len(issues)} of 120 audited train images may be mislabelled" in warning
    markdown = (report / "validate.md").read_text()
    assert "## Label audit" in markdown and "label_audit.png" in markdown
    assert f"| 1 | {issues[0]['file']} |" in markdown
    assert "label_audit.png" in (report / "validate.html").read_text()
    with Image.open(report / "label_audit.png") as picture:
        assert picture.width >= 8 * 96 and picture.height >= 96  # a row of thumbnails, at least
    plot = project / "datasets/plots/label_audit/noisy.png"
    assert plot.read_bytes() == (report / "label_audit.png").read_bytes()


def test_clean_labels_give_few_suspects(project: Path) -> None:
    write_seed_dataset(project / "datasets/raw/clean", PER_CLASS)
    summary = validate_stage(project, "clean")["label_audit"]
    print(f"label audit on 120 clean images: {summary['count']} suspects")
    assert summary["audited"] == 120 and summary["count"] <= 2
    # with no suspects there is no picture in the report, but the plot says so
    assert (project / "datasets/plots/label_audit/clean.png").is_file()


def records(raw: Path, counts: dict[str, int], labels=None) -> list[Record]:
    """Write images of the pattern classes, `counts` per class name; return their records."""
    from conftest import pattern

    rng, out = np.random.default_rng(3), []
    for name, n in counts.items():
        for i in range(n):
            file = f"train/{name}_{i}.png"
            (raw / "train").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern(CLASSES.index(name), rng), "L").save(raw / file)
            out.append(Record(file, 8, 8, labels=(labels or {}).get(file, (name,))))
    return out


def train_split(records_: list[Record], mode: str = "single") -> schema.Dataset:
    return assemble("t", "train", records_, category_list({"train": records_}), mode, "test")


def test_tiny_classes_reduce_the_folds_or_are_left_out(tmp_path: Path) -> None:
    train = train_split(records(tmp_path, {"bar": 10, "column": 3, "diagonal": 1}))
    found = audit(tmp_path, train, LabelAuditParams(), seed=0)
    assert found["audited"] == 13 and found["folds"] == 3
    assert any("'diagonal'" in note for note in found["notes"])
    assert any(note.startswith("3 folds, not 5") for note in found["notes"])
    one = train_split(records(tmp_path, {"bar": 4, "diagonal": 1}))
    found = audit(tmp_path, one, LabelAuditParams(), seed=0)
    assert found["count"] == 0 and "not run" in found["notes"][-1]
    found = audit(tmp_path, train, LabelAuditParams(model="none"), seed=0)
    assert found["count"] == 0 and "not run" in found["notes"][0]


def test_a_model_at_chance_is_inconclusive_not_a_list_of_its_mistakes(tmp_path: Path) -> None:
    rng, noise = np.random.default_rng(5), []
    for i in range(60):  # pure noise: no label can be learnt from the pixels
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        noise.append(Record(f"{i}.png", 8, 8, labels=(CLASSES[i % 3],)))
    found = audit(tmp_path, train_split(noise), LabelAuditParams(), seed=0)
    assert found["audited"] == 60 and found["kappa"] < 0.5 and found["count"] == 0
    assert "too weak to judge" in found["inconclusive"] and not found["issues"]


def test_max_images_audits_a_stratified_sample(tmp_path: Path) -> None:
    train = train_split(records(tmp_path, {"bar": 30, "column": 30, "diagonal": 6}))
    found = audit(tmp_path, train, LabelAuditParams(max_images=33, model="sgd"), seed=0)
    assert found["audited"] == 15 + 15 + 5  # each class its half; the small one keeps 5 (folds)
    assert "stratified random sample of 35 of 66" in found["notes"][0]


def test_multi_label_is_audited(tmp_path: Path) -> None:
    """Five bar images also labelled column (no column drawn): planted multi-label errors."""
    both = {f"train/bar_{i}.png": ("bar", "column") for i in range(0, 20, 4)}
    train = train_split(records(tmp_path, {"bar": 20, "column": 20}, both), "multi")
    found = audit(tmp_path, train, LabelAuditParams(), seed=0)
    assert found["label_mode"] == "multi" and found["audited"] == 40
    flagged = {i["file"] for i in found["issues"] if i["given"] == "bar,column"}
    assert len(flagged & set(both)) >= 3, found["issues"]
    assert all(i["suggested"] == "bar" for i in found["issues"] if i["file"] in both)


@pytest.mark.parametrize(
    "section, field",
    [({"model": "svm"}, "label_audit.model"), ({"image_size": [16]}, "label_audit.image_size")],
)
def test_bad_params_name_the_field(project: Path, section: dict, field: str) -> None:
    write_seed_dataset(project / "datasets/raw/tiny")
    edit_params(project / "params.yaml", label_audit=section)
    raw, norm = "datasets/raw/tiny", "datasets/normalized/tiny"
    assert run_stage("data_processing.normalize", raw, norm, cwd=project).returncode == 0
    proc = run_stage("data_processing.validate", raw, norm, "out", cwd=project)
    assert proc.returncode == 2 and field in proc.stderr, proc.stderr[-2000:]
    assert not (project / "out").exists()
