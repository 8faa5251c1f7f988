"""The sweep: every dataset x model x hyperparameter set as DVC experiments, queued in
priority order, run by `dvc queue start`, and ranked on a leaderboard."""

import json
import time
from pathlib import Path

import pytest
from conftest import BIN, copy_project, edit_params, sh, write_seed_dataset

from models.common.leaderboard import collect, experiments
from models.common.paths import Cell
from models.sweep import SweepParams, parse_grid, plan

PARAMS = {
    "datasets": ["old", "new"],
    "models": {"mlp": {}, "cnn": {}, "vgg": {}},
    "hparams": {"quick": {}, "base": {}},
}


def test_plan_orders_by_dataset_recency_then_model_priority_then_set() -> None:
    changed = {"old": 100.0, "new": 200.0}.get
    combos = plan(PARAMS, SweepParams(model_priority=["vgg"]), {}, [()], changed)
    assert [c.name for c in combos] == [
        "new-vgg-quick", "new-vgg-base", "new-mlp-quick", "new-mlp-base",
        "new-cnn-quick", "new-cnn-base", "old-vgg-quick", "old-vgg-base",
        "old-mlp-quick", "old-mlp-base", "old-cnn-quick", "old-cnn-base",
    ]  # fmt: skip


def test_plan_narrows_and_expands_with_grids() -> None:
    grid = parse_grid(["hparams.quick.learning_rate=0.1,0.01", "base.seed=1,2"])
    assert len(grid) == 4 and grid[0] == (
        ("hparams.quick.learning_rate", "0.1"),
        ("base.seed", "1"),
    )
    combos = plan(
        PARAMS,
        SweepParams(),
        {"datasets": ["old"], "models": ["mlp"], "hparams": ["quick"]},
        grid,
        lambda d: 0.0,
    )
    assert len(combos) == 4 and len({c.name for c in combos}) == 4
    assert combos[0].command() == [
        "dvc", "exp", "run", "--queue", "-n", combos[0].name, "-S",
        "hparams.quick.learning_rate=0.1", "-S", "base.seed=1", "export@old-mlp-quick",
    ]  # fmt: skip


def test_plan_rejects_unknown_names() -> None:
    from data_processing.core.errors import DataError

    with pytest.raises(DataError, match=r"field 'models'.*expected models from"):
        plan(PARAMS, SweepParams(), {"models": ["nope"]}, [()], lambda d: 0.0)


def test_leaderboard_reads_dvc_records() -> None:
    metrics = {"f1_macro": 0.9, "accuracy": 0.91, "ece": 0.02, "size_mb": 0.1}
    show = [
        {"rev": "workspace", "experiments": None},
        {
            "rev": "abc",
            "experiments": [
                {
                    "name": "d-m-h",
                    "revs": [
                        {
                            "name": "d-m-h",
                            "data": {
                                "timestamp": "2026-11-22T10:00:00",
                                "metrics": {"models/metrics/d-m-h.json": {"data": metrics}},
                            },
                        }
                    ],
                }
            ],
        },
    ]
    assert list(experiments(show)) == ["d-m-h"]
    rows = collect({"d-m-h": Cell("d", "m", "h")}, show)
    assert rows[0]["f1_macro"] == 0.9 and rows[0]["timestamp"] == "2026-11-22T10:00:00"


def sweep_repo(tmp_path: Path, models: tuple[str, ...]) -> tuple[Path, list[str]]:
    """A project with datasets "old" and "new" (added a second later), `models`, and the
    sets quick, quick2 and bad (which fails); return it and the sweep command."""
    repo = copy_project(tmp_path / "repo", models=models)
    edit_params(
        repo / "params.yaml",
        datasets=["old", "new"],
        hparams={"quick2": {"epochs": 3, "batch_size": 16}, "bad": {"optimizer": "nosuch"}},
    )
    for name in ("old", "new"):
        write_seed_dataset(repo / "datasets" / "raw" / name, {"train": 6, "test": 3})
        sh("dvc", "add", "-q", f"datasets/raw/{name}", cwd=repo)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-qm", f"add {name}", cwd=repo)
        time.sleep(1.1)
    return repo, [str(BIN / "python"), "-m", "models.sweep", "--hparams", "quick,quick2"]


def check_sweep(repo: Path, out: str, expected: list[str]) -> None:
    """Order from DVC's own records, a correct leaderboard, and every cell in plots diff."""
    ran = experiments(json.loads(sh("dvc", "exp", "show", "--json", cwd=repo, stdout_only=True)))
    assert set(expected) <= set(ran)
    assert sorted(expected, key=lambda n: ran[n]["timestamp"]) == expected
    assert f"{len(expected)}/{len(expected)} done, 0 running, 0 failed" in out
    board = (repo / "models" / "leaderboard.md").read_text()
    rows = [line.split(" | ") for line in board.splitlines() if line[:3].strip("| ").isdigit()]
    assert [r[1] for r in rows] == sorted(
        expected,
        key=lambda n: (
            -ran[n]["metrics"][f"models/metrics/{n}.json"]["data"]["f1_macro"],
            n,
        ),
    )
    for name, f1 in ((r[1], float(r[2])) for r in rows):
        test = ran[name]["metrics"][f"models/metrics/{name}.json"]["data"]
        assert abs(f1 - test["f1_macro"]) < 1e-3
    assert (repo / "models" / "leaderboard.png").stat().st_size > 0
    diff = json.loads(sh("dvc", "plots", "diff", *expected, "--json", cwd=repo, stdout_only=True))[
        "data"
    ]
    for name in expected:
        for plot in (f"models/plots/confusion/{name}.json", f"models/plots/loss/{name}.tsv"):
            assert name in diff[plot][0]["revisions"], plot


@pytest.mark.slow
def test_sweep_runs_in_priority_order_on_dvcs_queue(tmp_path: Path) -> None:
    repo, sweep = sweep_repo(tmp_path, ("mlp",))
    out = sh(*sweep, "--poll", "1", cwd=repo)
    check_sweep(repo, out, ["new-mlp-quick", "new-mlp-quick2", "old-mlp-quick", "old-mlp-quick2"])
    again = sh(*sweep, cwd=repo)  # every combination exists: nothing is queued
    assert again.count("exists, skipped") == 4
    failing = [*sweep[:3], "--datasets", "new", "--hparams", "bad", "--poll", "1"]
    out = sh(*failing, cwd=repo, check=False)
    assert "new-mlp-bad FAILED; its log ends" in out and "hparams.bad.optimizer" in out


@pytest.mark.grid
def test_grid_of_2_datasets_3_models_2_sets(tmp_path: Path) -> None:
    """The full grid (about 6 minutes on 2 cores): `make test-grid`."""
    repo, sweep = sweep_repo(tmp_path, ("mlp", "cnn", "vgg"))
    out = sh(*sweep, "-j", "1", "--poll", "2", cwd=repo)  # one worker: a strict order
    order = [
        f"{d}-{m}-{h}"
        for d in ("new", "old")
        for m in ("cnn", "mlp", "vgg")
        for h in ("quick", "quick2")
    ]  # sweep.model_priority: cnn, mlp; then params order
    check_sweep(repo, out, order)
