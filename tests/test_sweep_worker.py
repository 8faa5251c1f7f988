"""One grid cell run the way a cluster runs it: the command of the emitted Kubernetes Indexed
Job, run here with its index and plan, against a bare git remote and a real S3 endpoint on
127.0.0.1 (moto's server, from PyPI). A fresh clone then gets the experiment back from both
remotes, and `dvc repro` of that cell is a no-op. `make test-cluster`; .ci/run runs it."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, sh, tool_env
from remotes import objects, project_with_remotes

CELL = "tiny-mlp-quick"


@pytest.mark.cluster
def test_emitted_k8s_task_runs_a_cell_through_git_and_s3(tmp_path: Path, s3: str) -> None:
    repo, remote = project_with_remotes(tmp_path, s3, ("tiny",), ("mlp",))
    pushed = objects(s3)
    rev = sh("git", "rev-parse", "HEAD", cwd=repo, stdout_only=True).strip()
    emitted = sh(
        str(BIN / "python"), "-m", "models.sweep", "--emit", "k8s", "--rev", rev,
        cwd=repo, stdout_only=True,
    )  # fmt: skip
    container = yaml.safe_load(emitted)["spec"]["template"]["spec"]["containers"][0]
    plan = next(e["value"] for e in container["env"] if e["name"] == "REPROVISION_PLAN")
    assert [e["name"] for e in json.loads(plan)] == [CELL]
    work = tmp_path / "work"
    # JOB_COMPLETION_INDEX is what Kubernetes sets in the pod of index 0.
    env = tool_env(JOB_COMPLETION_INDEX="0", REPROVISION_PLAN=plan, TMPDIR=str(work))
    work.mkdir()
    # The pod's own command, from a folder that is not the project (a container's /).
    proc = subprocess.run(
        [*container["command"], *container["args"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"worker: {CELL} done" in proc.stdout
    assert not [p for p in work.iterdir() if p.name.startswith(CELL)]  # the clone is gone
    assert objects(s3) > pushed  # the cell's outputs and run cache went to S3

    refs = sh("git", "ls-remote", str(remote), "refs/exps/*", cwd=tmp_path, stdout_only=True)
    assert refs.strip().endswith(f"/{CELL}")
    # A fresh clone gets the experiment from git and its data from S3: nothing to rerun.
    fresh = tmp_path / "fresh"
    sh("git", "clone", "-q", str(remote), str(fresh), cwd=tmp_path)
    listed = sh("dvc", "exp", "list", "origin", "--name-only", cwd=fresh, stdout_only=True)
    assert listed.split() == [CELL]
    sh("dvc", "exp", "pull", "origin", CELL, cwd=fresh)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=fresh, stdout_only=True))
    exp = next(e for b in shown for e in (b.get("experiments") or []) if e.get("name") == CELL)
    metrics = exp["revs"][0]["data"]["metrics"][f"models/metrics/{CELL}.json"]["data"]
    assert 0.0 <= metrics["f1_macro"] <= 1.0
    # The cell's dvc.lock and its git-kept outputs (cache: false metrics and plot data) from
    # the experiment's commit (`dvc exp apply` would also check out every other stage's
    # outputs, which this one-cell grid never made).
    in_git = ("dvc.lock", "models/metrics", "models/plots")
    sh("git", "checkout", exp["revs"][0]["rev"], "--", *in_git, cwd=fresh)
    sh("dvc", "pull", f"export@{CELL}", "--with-deps", cwd=fresh)
    assert (fresh / f"models/runs/{CELL}/bundle/model.onnx").is_file()
    again = sh("dvc", "repro", f"export@{CELL}", cwd=fresh)
    assert "Running stage" not in again, again
