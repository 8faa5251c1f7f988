"""The remotes a cluster uses, on 127.0.0.1: moto's S3 server (from PyPI, not mocked in-process)
and a bare git repository; and a project pushed to both."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import (
    BIN,
    copy_project,
    edit_params,
    free_port,
    http_status,
    sh,
    stop_process,
    write_seed_dataset,
)

from data_processing.add_dataset import add_artifact

BUCKET = "grid"
# What a user sets for a real bucket (docs/pages/cluster.md); moto accepts any.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(log: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with one bucket; yield its URL. Set AWS_ENV first."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while http_status(url + "/moto-api/") == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        stop_process(proc)


def objects(url: str) -> int:
    import boto3

    listing = boto3.client("s3", endpoint_url=url).list_objects_v2(Bucket=BUCKET)
    return listing.get("KeyCount", 0)


def project_with_remotes(
    tmp_path: Path, s3_url: str, datasets: tuple[str, ...], models: tuple[str, ...]
) -> tuple[Path, Path]:
    """A project (tiny `datasets` x `models` x quick) pushed to a bare git remote and the S3
    remote; return both. Datasets are committed one by one, a second apart, so the sweep's
    recency order is fixed: the last one runs first."""
    repo = copy_project(tmp_path / "repo", models=models)
    edit_params(repo / "params.yaml", datasets=list(datasets))
    sh("dvc", "remote", "add", "-d", "store", f"s3://{BUCKET}/dvc", cwd=repo)
    sh("dvc", "remote", "modify", "store", "endpointurl", s3_url, cwd=repo)
    for i, name in enumerate(datasets):
        if i:
            time.sleep(1.1)
        write_seed_dataset(repo / "datasets" / "raw" / name, {"train": 6, "test": 3}, seed=i)
        sh("dvc", "add", "-q", f"datasets/raw/{name}", cwd=repo)
        add_artifact(name, repo / "dvc.yaml")  # <name>-classifier, as add-dataset declares
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-qm", f"add {name}, on an S3 remote", cwd=repo)
    remote = tmp_path / "remote.git"
    sh("git", "init", "-q", "--bare", "--initial-branch=main", str(remote), cwd=tmp_path)
    sh("git", "remote", "add", "origin", str(remote), cwd=repo)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=repo)
    sh("dvc", "push", cwd=repo)
    return repo, remote
