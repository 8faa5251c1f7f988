"""Every shell command the README's first two screens show, run as a user runs it.

`make run` and `make test` are what .ci/run runs on a clean clone (checked here, not run
twice); every other command runs, in order, in a copy of this workspace whose outputs come
from this workspace's DVC cache (so this needs a `make run` first, as .ci/run does): the
first prediction, from the command line and from a served model on 127.0.0.1:8080, the
feedback on it, and the daily loop down to `reprovision keep`'s commit.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import OFFLINE_TEMPLATE, ROOT, sh, tool_env

pytestmark = pytest.mark.loop
SCREENS = 2 * 50  # lines: two screens of a terminal or a rendered page


def first_screens() -> str:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## Results")[0]
    assert head.count("\n") <= SCREENS, "the README's guide outgrew its first two screens"
    return head


def shell_blocks(text: str) -> list[list[str]]:
    """The ```sh blocks' commands (comments and blank lines left out)."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [
        [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
        for block in blocks
    ]


def workspace_copy(dest: Path) -> Path:
    """This workspace as a new git repo (tracked and new files), sharing its DVC cache."""
    sh("git", "clone", "-q", str(ROOT), str(dest), cwd=ROOT)
    files = sh(
        "git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT, stdout_only=True
    ).split()
    for rel in [*files, OFFLINE_TEMPLATE]:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "this workspace", "--allow-empty", cwd=dest)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    sh("dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache"), cwd=dest)
    done = subprocess.run(["dvc", "checkout"], cwd=dest, env=tool_env(), capture_output=True)
    assert done.returncode == 0, f"run `make run` first: {done.stderr.decode()[-2000:]}"
    return dest


def run_script(lines: list[str], cwd: Path) -> str:
    stop_jobs = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"  # `reprovision serve &`
    script = "\n".join(["set -eo pipefail", stop_jobs, *lines])
    proc = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=tool_env(COLUMNS="200"), capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc.stdout


def test_make_run_and_make_test_are_what_ci_runs() -> None:
    install, *rest = shell_blocks(first_screens())
    assert [line.split("#")[0].strip() for line in install] == ["make run", "make test"]
    ci = (ROOT / ".ci/run").read_text()
    assert "\nmake run " in ci and "\nmake test\n" in ci


def test_every_command_of_the_first_screens_runs(tmp_path: Path) -> None:
    _, predict, feedback, loop, *_ = shell_blocks(first_screens())
    repo = workspace_copy(tmp_path / "repo")
    out = run_script([*predict, "echo", *feedback, "kill %1"], repo)
    labelled, answered, stored = out.strip().splitlines()[-3:]
    assert labelled.startswith("datasets/raw/digits/test/digit_0004.png\t4\t")
    assert json.loads(answered)["label"] == "4"
    assert json.loads(stored)["stored"] is True
    head = sh("git", "rev-parse", "HEAD", cwd=repo, stdout_only=True)
    out = run_script(loop, repo)
    assert "digits.f1_macro" in out or "digits.best" in out  # the table, however narrow
    assert "models/metrics/digits-cnn-quick.json" in out  # metrics diff names the changed cell
    assert sh("git", "rev-parse", "HEAD", cwd=repo, stdout_only=True) != head  # keep committed
