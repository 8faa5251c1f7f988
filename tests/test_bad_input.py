"""Each kind of bad input: a clear error naming file, row and expectation; non-zero exit;
no half-written output."""

import shutil
from pathlib import Path

import pytest
from conftest import edit_params, run_stage, write_seed_dataset


@pytest.fixture
def raw(project: Path) -> Path:
    return write_seed_dataset(project / "datasets" / "raw" / "tiny")


def normalize(project: Path):
    out = project / "datasets" / "normalized" / "tiny"
    proc = run_stage("data_processing.normalize", "datasets/raw/tiny", out, cwd=project)
    return proc, out


def validate(project: Path):
    proc, norm = normalize(project)
    assert proc.returncode == 0, proc.stderr
    out = project / "datasets" / "reports" / "tiny"
    proc = run_stage("data_processing.validate", "datasets/raw/tiny", norm, out, cwd=project)
    return proc, out


def assert_fails(proc, out: Path, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not out.exists(), "a failed stage must leave no output"
    assert not list(out.parent.glob(".*tmp")), "no temporary leftovers"


def test_good_dataset_passes(project: Path, raw: Path) -> None:
    proc, out = validate(project)
    assert proc.returncode == 0, proc.stderr
    assert (out / "validate.json").is_file() and (out / "validate.md").is_file()


def test_missing_groundtruth_csv(project: Path, raw: Path) -> None:
    (raw / "test" / "groundtruth.csv").unlink()
    assert_fails(
        *normalize(project),
        "test/groundtruth.csv",
        "expected a CSV file with columns filename,label",
        "no such file",
    )


def test_csv_without_columns_shows_headers(project: Path, raw: Path) -> None:
    csv = raw / "train" / "groundtruth.csv"
    csv.write_text(csv.read_text().replace("filename,label", "image;class", 1))
    assert_fails(
        *normalize(project),
        "train/groundtruth.csv, row 1",
        "expected header filename,label",
        "found image;class",
    )


def test_utf8_bom_is_accepted(project: Path, raw: Path) -> None:
    csv = raw / "train" / "groundtruth.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    proc, out = normalize(project)
    assert proc.returncode == 0, proc.stderr
    assert (out / "train.json").is_file()


def test_listed_file_missing_suggests_case_match(project: Path, raw: Path) -> None:
    (raw / "train" / "bar_001.png").rename(raw / "train" / "BAR_001.png")
    assert_fails(
        *normalize(project),
        "train/groundtruth.csv, row 3, field 'filename'",
        "no such file",
        "did you mean 'BAR_001.png'?",
    )


def test_image_not_listed(project: Path, raw: Path) -> None:
    shutil.copy(raw / "test" / "bar_000.png", raw / "test" / "stray.png")
    assert_fails(*normalize(project), "test/stray.png", "expected a row for it in", "not listed")


def test_corrupt_image(project: Path, raw: Path) -> None:
    (raw / "train" / "column_002.png").write_bytes(b"this is not a png")
    assert_fails(
        *normalize(project),
        "train/column_002.png",
        "row groundtruth.csv:",
        "expected a readable PNG, JPEG, BMP or GIF image",
    )


def test_truncated_image(project: Path, raw: Path) -> None:
    path = raw / "test" / "diagonal_001.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixels cut
    assert_fails(
        *validate(project),
        "test/diagonal_001.png",
        "expected a complete, decodable image",
        "listed at test/groundtruth.csv:",
    )


def test_empty_split(project: Path, raw: Path) -> None:
    for png in (raw / "test").glob("*.png"):
        png.unlink()
    (raw / "test" / "groundtruth.csv").write_text("filename,label\n")
    assert_fails(
        *normalize(project),
        "test/groundtruth.csv",
        "expected at least one image row",
        "found an empty split",
    )


def test_test_label_unknown_to_train(project: Path, raw: Path) -> None:
    csv = raw / "test" / "groundtruth.csv"
    csv.write_text(csv.read_text().replace("bar_000.png,bar", "bar_000.png,zebra"))
    assert_fails(
        *validate(project),
        "test/groundtruth.csv:2",
        "label 'zebra' is in test but not in train",
        "expected one of ['bar', 'column', 'diagonal']",
    )


def test_duplicate_row(project: Path, raw: Path) -> None:
    csv = raw / "train" / "groundtruth.csv"
    csv.write_text(csv.read_text() + "bar_000.png,bar\n")
    assert_fails(
        *normalize(project),
        "row 26, field 'filename'",
        "expected each filename once",
        "first on row 2",
    )


def test_wrong_params_type(project: Path, raw: Path) -> None:
    edit_params(project / "params.yaml", validate={"max_imbalance": "lots"})
    assert_fails(
        *validate(project),
        "params.yaml, field 'validate.max_imbalance'",
        "expected input should be a valid number",
        "found 'lots'",
    )
