"""The grid as a job for a scheduler people already run, each task one `models.sweep worker`.

- k8s: a Kubernetes Indexed Job (`completionMode: Indexed`); the task's index comes from
  $JOB_COMPLETION_INDEX, failed indices are retried (`backoffLimitPerIndex`).
- slurm: a Slurm array script (`sbatch`); the index is $SLURM_ARRAY_TASK_ID, and `--requeue`
  runs a task again when its node fails.
- github: a GitHub Actions workflow with one matrix job per index (`fail-fast: false`).

Every task runs the same command, `python -m models.sweep worker --index I --rev SHA`, with the
ordered plan in $REPROVISION_PLAN: lower indices are the higher-priority cells, and every one
of these schedulers starts them in index order. Credentials come from the scheduler's own
secrets (AWS_* for the S3 remote, a git token in the remote's URL), never from the file.
"""

import json
import re
import shlex
import subprocess

from models.common.yaml_dump import dump
from models.sweep_worker import PLAN_ENV

IMAGE = "reprovision-train:latest"  # deployment/Dockerfile.train
SECRET = "reprovision-remotes"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def plan_entries(combos) -> list[dict]:
    """The ordered plan, one entry per task index (what the worker's --index reads)."""
    return [
        {"cell": c.cell.name, "name": c.name, "set": [f"{k}={v}" for k, v in c.overrides]}
        for c in combos
    ]


def plan_json(combos) -> str:
    return json.dumps(plan_entries(combos), separators=(",", ":"))


def worker_args(rev: str, repo: str, index: str) -> list[str]:
    command = ["python", "-m", "models.sweep", "worker", "--index", index]
    return [*command, "--rev", rev, "--repo", repo]


def secret_env(key: str) -> dict:
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


def k8s(combos, rev: str, repo: str, parallel: int, image: str = IMAGE) -> str:
    n = len(combos)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"reprovision-sweep-{rev[:8]}", "labels": {"app": "reprovision"}},
        "spec": {
            "completions": n,
            "parallelism": min(parallel, n),
            "completionMode": "Indexed",
            "backoffLimitPerIndex": 2,  # a task whose pod died runs again, twice at most
            "maxFailedIndexes": n,  # a failing cell never stops the others
            "template": {
                "metadata": {"labels": {"app": "reprovision"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "worker",
                            "image": image,
                            "command": ["/bin/sh", "-c"],
                            "args": [" ".join(worker_args(rev, repo, "$JOB_COMPLETION_INDEX"))],
                            "env": [
                                {"name": PLAN_ENV, "value": plan_json(combos)},
                                *[secret_env(key) for key in AWS_KEYS],
                            ],
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                        }
                    ],
                },
            },
        },
    }
    return dump(job)


def slurm(combos, rev: str, repo: str, parallel: int) -> str:
    n = len(combos)
    command = " ".join(worker_args(rev, repo, '"$SLURM_ARRAY_TASK_ID"'))
    return f"""#!/bin/bash
# The grid at {rev[:8]}: {n} cells, one array task each, in priority order.
# Submit from a checkout with .venv installed (make install): sbatch sweep.slurm
#SBATCH --job-name=reprovision-sweep
#SBATCH --array=0-{n - 1}%{min(parallel, n)}
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --requeue
#SBATCH --output=sweep-%A_%a.log
set -euo pipefail
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY come from the submitting environment.
export {PLAN_ENV}={shlex.quote(plan_json(combos))}
source .venv/bin/activate
{command}
"""


def github(combos, rev: str, repo: str, parallel: int) -> str:
    n = len(combos)
    workflow = {
        "name": "reprovision sweep",
        "on": {"workflow_dispatch": {}},
        "jobs": {
            "cell": {
                "runs-on": "ubuntu-latest",
                "timeout-minutes": 360,
                "strategy": {
                    "fail-fast": False,
                    "max-parallel": min(parallel, n),
                    "matrix": {"index": list(range(n))},
                },
                "env": {
                    PLAN_ENV: plan_json(combos),
                    **{key: f"${{{{ secrets.{key} }}}}" for key in AWS_KEYS},
                },
                "steps": [
                    {"uses": "actions/checkout@v4", "with": {"ref": rev, "fetch-depth": 0}},
                    {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
                    {"run": "make install"},
                    {
                        "run": "source .venv/bin/activate && "
                        + " ".join(worker_args(rev, repo, "${{ matrix.index }}")),
                    },
                ],
            }
        },
    }
    # PyYAML writes the key `on` quoted, as GitHub reads it (unquoted YAML 1.1 makes it true).
    return dump(workflow)


EMITTERS = {"k8s": k8s, "slurm": slurm, "github": github}
FORMATS = tuple(EMITTERS)


def emit(kind: str, combos, rev: str, repo: str, parallel: int) -> str:
    return EMITTERS[kind](combos, rev, repo, parallel)


def is_local(url: str) -> bool:
    """A path on this machine (or file://), not a URL another machine can reach."""
    return url.startswith("file://") or not (
        "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url)  # scp-like git@host:team/repo
    )


def dvc_remote() -> tuple[str, str] | None:
    """The default DVC remote's (name, url), or None without one."""
    name = subprocess.run(["dvc", "remote", "default"], capture_output=True, text=True)
    listed = subprocess.run(["dvc", "remote", "list"], capture_output=True, text=True)
    urls = dict(line.split(maxsplit=1) for line in listed.stdout.splitlines() if line.strip())
    found = name.stdout.strip()
    return (found, urls.get(found, "").strip()) if name.returncode == 0 and found else None


def check(repo: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a job whose tasks clone `repo` and push to the DVC remote: with
    no default DVC remote a task's models go nowhere; local paths reach only this machine
    (on Slurm with a shared filesystem they may be right, hence a warning)."""
    errors, warnings = [], []
    remote = dvc_remote()
    if remote is None:
        errors.append(
            "no default DVC remote: each task pushes its cell's models there "
            "(dvc remote add -d NAME s3://bucket/path, then commit .dvc/config)"
        )
    elif is_local(remote[1]):
        warnings.append(
            f"the DVC remote {remote[0]} is {remote[1]!r}, a path: only tasks that mount it "
            "at that path reach it"
        )
    if is_local(repo):
        warnings.append(
            f"--repo is {repo!r}, a path on this machine: a pod or node elsewhere cannot "
            "clone it; pass --repo with a URL the cluster reaches (https://, ssh://, git@host:)"
        )
    return errors, warnings
