"""The whole default pipeline shared through an S3 remote (moto's server on 127.0.0.1) and a
bare git remote: a fresh clone pulls everything and `dvc repro` is a no-op, and
`dvc artifacts get` fetches the promoted model through S3. `make test-cluster`."""

from pathlib import Path

import pytest
from conftest import BIN, sh
from remotes import objects, project_with_remotes

from deployment.server.bundle import file_sha256


@pytest.mark.cluster
def test_fresh_clone_pulls_from_s3_and_repro_is_a_noop(tmp_path: Path, s3: str) -> None:
    repo, remote = project_with_remotes(tmp_path, s3, ("tiny",), ("mlp",))
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "dvc repro on an S3 remote", cwd=repo)
    sh(str(BIN / "python"), "-m", "deployment.release.registry", cwd=repo)  # tags it prod
    sh("git", "push", "-q", "--tags", "origin", "HEAD:main", cwd=repo)
    before = objects(s3)
    sh("dvc", "push", cwd=repo)
    assert objects(s3) > before

    fresh = tmp_path / "fresh"
    sh("git", "clone", "-q", str(remote), str(fresh), cwd=tmp_path)
    sh("dvc", "pull", cwd=fresh)
    out = sh("dvc", "repro", cwd=fresh)
    assert "Running stage" not in out and "up to date" in out, out
    assert "changed" not in sh("dvc", "status", cwd=fresh)

    # The registry's production model (dvc.yaml `artifacts: tiny-classifier`, GTO's prod tag
    # on the git remote), its files from S3.
    got, artifact = tmp_path / "classifier", "tiny-classifier"
    get = ["dvc", "artifacts", "get", str(remote), artifact, "--stage", "prod", "-o", str(got)]
    sh(*get, cwd=tmp_path)
    for name in ("model.onnx", "model.keras", "labels.json"):
        theirs = repo / "deployment" / "tiny" / "production" / name
        assert file_sha256(got / name) == file_sha256(theirs), name
