"""Every command answers --help, and a wrong call with a usage line and exit 2, not a
traceback: the stage scripts dvc.yaml runs and the tools people run by hand."""

import re
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
TOOLS = {  # module: the reprovision command it is, and names itself in --help
    "data_processing.add_dataset": "add-dataset",
    "models.sweep": "sweep",
    "models.keep": "keep",
    "models.leaderboard": "leaderboard",
    "models.savedmodel": "savedmodel",
    "models.run": "run",
    "models.results": "results",
    "deployment.server.serve": "serve",
    "deployment.server.predict": "predict",
    "deployment.server.retention": "retention",
    "deployment.release.watch": "watch",
    "deployment.release.registry": "registry",
    "deployment.release.rollback": "rollback",
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("module", [*STAGES, *TOOLS])
def test_help(module: str) -> None:
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    name = f"reprovision {TOOLS[module]}" if module in TOOLS else f"python -m {module}"
    assert proc.stdout.startswith(f"usage: {name} ")
    for argument in STAGES.get(module, ()):
        assert f"\n  {argument} " in proc.stdout  # each argument is explained
    assert_complete(proc.stdout)


def assert_complete(shown: str) -> None:
    """The description is whole sentences, and every argument has its help text."""
    blocks = shown.split("\n\n")
    description = " ".join(blocks[1].split())
    assert description.endswith((".", ")")), f"cut off: {description!r}"
    lines = shown.splitlines()
    for i, line in enumerate(lines):
        # a flag or argument alone on its line: argparse puts its help on the next one
        alone = line.startswith("  ") and line[2] != " " and "  " not in line.strip()
        if alone and ":" not in line:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            assert following.startswith(" " * 10), f"no help text for {line.strip()!r}"


@pytest.mark.parametrize("module", list(STAGES))
def test_a_wrong_call_is_a_usage_error(module: str) -> None:
    proc = run(module, "one", "two", "three", "four", "five")  # one more than any stage takes
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"usage: python -m {module} ")
    assert "unrecognized arguments" in proc.stderr


def test_every_printed_set_param_hint_names_a_params_key() -> None:
    """`dvc exp run -S key=value` hints (make run's closing lines, the README) name keys
    params.yaml has, so the strict params accept them (`make run` once printed a stale one)."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    from models.leaderboard import next_steps

    docs = [p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join([next_steps(["digits"], "digits-cnn-quick"), *docs])
    text += (ROOT / "README.md").read_text()
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

    assert {module: name for name, (module, _) in COMMANDS.items()} == TOOLS
    listing = subprocess.run([REPROVISION, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert listing.returncode == 0 and all(name in listing.stdout for name in COMMANDS)
    for name in COMMANDS:
        done = subprocess.run(
            [REPROVISION, name, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert done.stdout.startswith(f"usage: reprovision {name} "), (name, done.stdout[:200])
    wrong = subprocess.run([REPROVISION, "trian"], capture_output=True, text=True, cwd=ROOT)
    assert wrong.returncode == 2 and "unknown command 'trian'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
