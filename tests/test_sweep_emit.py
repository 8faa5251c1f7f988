"""The grid for other schedulers: `models.sweep --emit k8s|slurm|github`, checked by their
ecosystems' tools where those install from PyPI (kubernetes-validate's bundled schemas,
yamllint), by bash and a parser otherwise; and the worker's refusal of a bad plan."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, sh, tool_env

REV = "0123456789abcdef0123456789abcdef01234567"
REPO = "https://git.example.invalid/team/vision.git"  # only written into files, never reached
PLAN = ["digits-mlp-quick", "digits-mlp-base"]  # --models mlp, the params order of the sets


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's params in a git and DVC repo with a default DVC remote (never reached)."""
    repo = tmp_path_factory.mktemp("emit")
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "remote", "add", "-d", "store", "s3://bucket.example.invalid/dvc", cwd=repo)
    return repo


def run_emit(cwd: Path, kind: str, *more: str) -> subprocess.CompletedProcess:
    """The repo's own code (PYTHONPATH) run in `cwd`, as a user runs it in their clone."""
    return subprocess.run(
        [str(BIN / "python"), "-m", "models.sweep", "--emit", kind, "--models", "mlp", *more],
        cwd=cwd,
        env=tool_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )


def emit(kind: str, tmp_path: Path, project: Path) -> Path:
    proc = run_emit(project, kind, "--rev", REV, "--repo", REPO, "-j", "2")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    out = proc.stdout
    path = tmp_path / f"sweep.{kind}"
    path.write_text(out)
    return path


def plan_names(plan_json: str) -> list[str]:
    return [entry["name"] for entry in json.loads(plan_json)]


def yamllint(path: Path) -> None:
    config = "{extends: default, rules: {line-length: disable, document-start: disable}}"
    sh(str(BIN / "yamllint"), "--strict", "-d", config, str(path), cwd=ROOT)


def test_k8s_indexed_job_is_valid_and_runs_the_worker(tmp_path: Path, project: Path) -> None:
    path = emit("k8s", tmp_path, project)
    out = sh(str(BIN / "kubernetes-validate"), "--strict", str(path), cwd=ROOT)
    assert "passed for resource job/" in out
    yamllint(path)
    job = yaml.safe_load(path.read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == len(PLAN)
    assert spec["parallelism"] == 2 and spec["backoffLimitPerIndex"] >= 1
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "reprovision-train:latest"
    command = " ".join(container["command"] + container["args"])
    worker = "models.sweep worker --index $JOB_COMPLETION_INDEX"
    assert f"{worker} --rev {REV} --repo {REPO}" in command
    env = {e["name"]: e for e in container["env"]}
    assert plan_names(env["REPROVISION_PLAN"]["value"]) == PLAN
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == (
        "AWS_SECRET_ACCESS_KEY"
    )


def test_slurm_array_script_parses_and_exports_the_plan(tmp_path: Path, project: Path) -> None:
    path = emit("slurm", tmp_path, project)
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert re.search(r"^#SBATCH --array=0-1%2$", text, re.M)
    assert "--requeue" in text
    assert f'worker --index "$SLURM_ARRAY_TASK_ID" --rev {REV} --repo {REPO}' in text
    # The export line, run by bash itself, gives the worker the ordered plan.
    export = next(line for line in text.splitlines() if line.startswith("export "))
    shown = subprocess.run(
        ["bash", "-c", f'{export}; printf %s "$REPROVISION_PLAN"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert plan_names(shown) == PLAN


def test_github_matrix_workflow(tmp_path: Path, project: Path) -> None:
    path = emit("github", tmp_path, project)
    yamllint(path)
    workflow = yaml.safe_load(path.read_text())
    assert "workflow_dispatch" in workflow["on"]  # the key is quoted: YAML 1.1 reads on as true
    job = workflow["jobs"]["cell"]
    assert job["strategy"]["matrix"]["index"] == list(range(len(PLAN)))
    assert job["strategy"]["fail-fast"] is False and job["strategy"]["max-parallel"] == 2
    assert plan_names(job["env"]["REPROVISION_PLAN"]) == PLAN
    assert job["env"]["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert job["steps"][0]["with"]["ref"] == REV
    assert f"worker --index ${{{{ matrix.index }}}} --rev {REV}" in job["steps"][-1]["run"]


@pytest.mark.parametrize(
    "plan, expected",
    [
        (None, "$REPROVISION_PLAN: expected the plan's JSON"),
        ("[{", "$REPROVISION_PLAN: expected valid JSON"),
        ('[{"cell": "a-b-c"}]', "expected a list with an entry 3"),
        ("[0, 1, 2, 3]", 'expected entry 3 with a "cell"'),
    ],
)
def test_worker_refuses_a_bad_plan(plan: str | None, expected: str) -> None:
    env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    if plan is not None:
        env["REPROVISION_PLAN"] = plan
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "models.sweep", "worker", "--index", "3", "--rev", REV],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_emit_refuses_a_project_without_a_dvc_remote(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    proc = run_emit(tmp_path, "k8s", "--rev", REV, "--repo", REPO)
    assert proc.returncode == 2 and not proc.stdout, proc.stdout
    assert "no default DVC remote" in proc.stderr and "dvc remote add -d" in proc.stderr


def test_emit_warns_on_a_local_repository_path(project: Path) -> None:
    proc = run_emit(project, "k8s", "--rev", REV, "--repo", str(project))
    assert proc.returncode == 0 and "kind: Job" in proc.stdout
    assert f"--repo is {str(project)!r}, a path on this machine" in proc.stderr, proc.stderr
