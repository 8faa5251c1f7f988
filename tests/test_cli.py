"""Every command answers --help, and a wrong call with a usage line and exit 2, not a
traceback: the stage scripts dvc.yaml runs and the tools people run by hand."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

STAGES = {  # module: its positional arguments, as dvc.yaml passes them
    "data_processing.digits": ["out_dir"],
    "data_processing.normalize": ["raw_dir", "out_dir"],
    "data_processing.validate": ["raw_dir", "norm_dir", "out_dir", "plot"],
    "data_processing.shard": ["raw_dir", "norm_dir", "out_dir"],
    "models.train": ["dataset", "model", "hparams"],
    "models.evaluate": ["dataset", "model", "hparams"],
    "models.export": ["dataset", "model", "hparams"],
    "models.compare": ["plots_dir", "out_dir"],
    "deployment.release.select": ["dataset"],
    "deployment.release.deploy_test": ["pointer", "out"],
}
TOOLS = [
    "data_processing.add_dataset",
    "models.sweep",
    "models.keep",
    "models.leaderboard",
    "models.savedmodel",
    "deployment.server.serve",
    "deployment.release.watch",
    "deployment.release.registry",
    "deployment.release.rollback",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("module", [*STAGES, *TOOLS])
def test_help(module: str) -> None:
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python -m {module} ")
    for name in STAGES.get(module, ()):
        assert f"\n  {name} " in proc.stdout  # each argument is explained


@pytest.mark.parametrize("module", list(STAGES))
def test_a_wrong_call_is_a_usage_error(module: str) -> None:
    proc = run(module, "one", "two", "three", "four", "five")  # one more than any stage takes
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"usage: python -m {module} ")
    assert "unrecognized arguments" in proc.stderr


def test_every_printed_set_param_hint_names_a_params_key() -> None:
    """`dvc exp run -S key=value` hints (make run's closing lines, the README) name keys
    params.yaml has, so the strict params accept them (`make run` once printed a stale one)."""
    import re

    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = (ROOT / "Makefile").read_text() + (ROOT / "README.md").read_text()
    keys = re.findall(r"-S ([a-z_]+\.[a-z_.]+)=", text)  # dotted: not the "key=value" placeholder
    assert "hparams.quick.epochs" in keys  # the one make run prints
    for key in keys:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key}: no {part!r} in params.yaml"
            node = node[part]


REPROVISION = Path(sys.executable).with_name("reprovision")  # pyproject.toml [project.scripts]


def test_one_console_entry_point_lists_and_runs_every_tool() -> None:
    from data_processing.core.cli import COMMANDS

    assert sorted(module for module, _ in COMMANDS.values()) == sorted(TOOLS)
    listing = subprocess.run([REPROVISION, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert listing.returncode == 0 and all(name in listing.stdout for name in COMMANDS)
    for name in COMMANDS:
        done = subprocess.run(
            [REPROVISION, name, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        shown = "python -m deployment.server.serve" if name == "serve" else f"reprovision {name}"
        assert done.stdout.startswith(f"usage: {shown}"), (name, done.stdout[:200])
    wrong = subprocess.run([REPROVISION, "trian"], capture_output=True, text=True, cwd=ROOT)
    assert wrong.returncode == 2 and "unknown command 'trian'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
