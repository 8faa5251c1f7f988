"""`python -m data_processing.add_dataset`, for real: a temporary git + DVC repository.

The command runs as a subprocess in that repository, like a user would run it; the project's
params.yaml and dvc.yaml are copied in so the DVC matrix can be checked to pick the name up.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_stage, write_seed_dataset

from data_processing.add_dataset import add_to_params


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def staged(repo: Path) -> set[str]:
    return set(git(repo, "diff", "--cached", "--name-only").split())


def add(repo: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return run_stage("data_processing.add_dataset", *args, cwd=repo)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh `git init` + `dvc init` repository holding the project's params and pipeline."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, repo / name)
    return repo


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_seed_dataset(tmp_path / "incoming" / "tiny_source")


def comment_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "#" in line]


@pytest.mark.slow  # real dvc add and dvc stage list: a few seconds
def test_adds_copies_tracks_stages_and_lists_the_dataset(repo: Path, source: Path) -> None:
    before = (repo / "params.yaml").read_text()
    proc = add(repo, source, "--name", "tiny")
    assert proc.returncode == 0, proc.stderr
    dest = repo / "datasets" / "raw" / "tiny"
    copied = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert (dest / "test/bar_001.png").read_bytes() == (source / "test/bar_001.png").read_bytes()
    assert (repo / "datasets/raw/tiny.dvc").is_file()
    assert "/tiny" in (repo / "datasets/raw/.gitignore").read_text().split()
    assert {"datasets/raw/tiny.dvc", "datasets/raw/.gitignore", "params.yaml"} <= staged(repo)
    after = (repo / "params.yaml").read_text()
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert new["datasets"] == old["datasets"] + ["tiny"]
    assert {k: v for k, v in new.items() if k != "datasets"} == {
        k: v for k, v in old.items() if k != "datasets"
    }
    assert comment_lines(after) == comment_lines(before)  # every comment, in place
    assert len(after.splitlines()) == len(before.splitlines())  # one line edited in place
    assert "dvc repro" in proc.stdout and "git commit" in proc.stdout
    stages = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list"], cwd=repo, capture_output=True, text=True
    )
    assert "validate@tiny" in stages.stdout and "normalize@tiny" in stages.stdout, stages.stderr


@pytest.mark.slow  # two real dvc adds
def test_existing_name_needs_force(repo: Path, source: Path, tmp_path: Path) -> None:
    assert add(repo, source, "--name", "tiny").returncode == 0
    again = add(repo, source, "--name", "tiny")
    assert again.returncode == 2
    assert "datasets/raw/tiny: expected a new dataset name" in again.stderr
    assert "pass --force" in again.stderr
    other = write_seed_dataset(tmp_path / "other", per_class={"train": 5, "test": 2}, seed=1)
    forced = add(repo, other, "--name", "tiny", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(list((repo / "datasets/raw/tiny/test").glob("*.png"))) == 6
    assert yaml.safe_load((repo / "params.yaml").read_text())["datasets"].count("tiny") == 1


def truncate_png(source: Path) -> str:
    path = source / "test" / "diagonal_001.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixels cut
    return "test/diagonal_001.png: expected a complete, decodable image"


def unknown_test_label(source: Path) -> str:
    csv = source / "test" / "groundtruth.csv"
    csv.write_text(csv.read_text().replace("bar_000.png,bar", "bar_000.png,zebra"))
    return "label 'zebra' is in test but not in train"


@pytest.mark.parametrize("breakage", [truncate_png, unknown_test_label])
def test_broken_dataset_is_refused_and_nothing_is_left(repo: Path, source: Path, breakage) -> None:
    expected = breakage(source)
    before = (repo / "params.yaml").read_text()
    proc = add(repo, source, "--name", "tiny")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "expected a dataset without errors" in proc.stderr
    assert "refused: nothing was copied" in proc.stderr
    assert "# Validation report" in proc.stderr  # the full report, for people
    assert not (repo / "datasets").exists()
    assert (repo / "params.yaml").read_text() == before
    assert not any("tiny" in path for path in staged(repo))


@pytest.mark.parametrize("name", ["Tiny", "tiny set", "../tiny", ""])
def test_bad_name_is_refused(project: Path, source: Path, name: str) -> None:
    proc = add(project, source, "--name", name)  # refused before git or DVC are looked at
    assert proc.returncode == 2
    assert "--name: expected a name matching [a-z0-9_-]+" in proc.stderr
    assert f"found {name!r}" in proc.stderr
    assert not (project / "datasets").exists()


def test_outside_a_dvc_project_is_refused(tmp_path: Path, source: Path) -> None:
    work = tmp_path / "not_a_repo"
    work.mkdir()
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    proc = add(work, source, "--name", "tiny")
    assert proc.returncode == 2 and "expected the project root" in proc.stderr
    assert "found no .dvc" in proc.stderr
    assert not (work / "datasets").exists()


def test_other_format_is_recorded_in_normalize_formats(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    before = path.read_text()
    add_to_params("shapes", "coco", path)
    after = path.read_text()
    data = yaml.safe_load(after)
    assert data["datasets"][-1] == "shapes" and data["normalize"]["formats"]["shapes"] == "coco"
    assert comment_lines(after)[0] == comment_lines(before)[0]
    assert len(comment_lines(after)) == len(comment_lines(before))
    assert len(after.splitlines()) == len(before.splitlines())


def test_unknown_format_is_refused(repo: Path, source: Path) -> None:
    proc = add(repo, source, "--name", "tiny", "--format", "tiff_stack")
    assert proc.returncode == 2
    assert "--format: expected a source format: auto or one of [" in proc.stderr
    assert "found 'tiff_stack'" in proc.stderr
    assert not (repo / "datasets").exists()
