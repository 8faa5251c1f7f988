"""The results tables in README.md and docs/pages/results.md are the committed metrics'
(models/results.py), and the commands the README shows are the ones `make run` prints."""

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from models import leaderboard, results


def test_the_readme_and_docs_results_are_the_metrics(monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    results.main(["--check"])  # exits 1 when stale
    shown = (ROOT / "README.md").read_text()
    assert "| **digits-" in shown and "(production)" in shown


def test_a_number_that_differs_from_the_metrics_fails(tmp_path: Path, monkeypatch, capsys):
    for rel in ["README.md", "params.yaml", "docs/pages/results.md", "models/metrics"]:
        copy = shutil.copytree if (ROOT / rel).is_dir() else shutil.copy2
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / rel, tmp_path / rel)
    monkeypatch.chdir(tmp_path)
    results.main([])  # this workspace's figures, whatever they are
    readme = tmp_path / "README.md"
    line = next(x for x in readme.read_text().splitlines() if x.startswith("| digits-cnn-base"))
    figure = line.split("|")[2].strip()
    changed = f"{float(figure) - 0.0111:.4f}"
    readme.write_text(readme.read_text().replace(line, line.replace(figure, changed, 1)))
    with pytest.raises(SystemExit) as stop:
        results.main(["--check"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "README.md: line" in err and changed in err and figure in err, err
    assert "docs/pages/results.md" not in err  # only the file that differs is named


def test_the_readme_shows_the_table_command_make_run_prints() -> None:
    datasets = ["digits"]
    command = leaderboard.table_command(datasets)
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / "docs/pages/experiments.md").read_text()
    assert command in leaderboard.next_steps(datasets, "digits-cnn-quick")
