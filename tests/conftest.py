"""Shared fixtures: tiny generated datasets in the seed folder format, and stage runners."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("bar", "column", "diagonal")


def pattern(label: int, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """A noisy 8x8 uint8 image whose stroke depends on the class: easy to learn."""
    img = rng.integers(0, 40, (size, size)).astype(np.uint8)
    pos = int(rng.integers(1, size - 1))
    if label == 0:
        img[pos, :] = 255
    elif label == 1:
        img[:, pos] = 255
    else:
        np.fill_diagonal(img, 255)
    return img


def write_seed_dataset(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write train/ and test/ with PNGs and groundtruth.csv; return root."""
    per_class = per_class or {"train": 8, "test": 4}
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        with (root / split / "groundtruth.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", "label"])
            for label, name in enumerate(CLASSES):
                for i in range(n):
                    file = f"{name}_{i:03d}.png"
                    Image.fromarray(pattern(label, rng), "L").save(root / split / file)
                    writer.writerow([file, name])
    return root


@pytest.fixture
def seed_dataset(tmp_path: Path) -> Path:
    return write_seed_dataset(tmp_path / "raw" / "tiny")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory holding a copy of the project's params.yaml."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return work


def details(repo: Path, cell: str) -> dict:
    """Every evaluation figure of a cell: models/runs/<cell>/eval/metrics.json (evaluate's
    test scores, training epochs, size, calibration; its headline is models/metrics/)."""
    return json.loads((repo / f"models/runs/{cell}/eval/metrics.json").read_text())


def headline(repo: Path, cell: str) -> dict:
    """A cell's headline metrics: models/metrics/<cell>.json."""
    return json.loads((repo / f"models/metrics/{cell}.json").read_text())


def assert_same_model(expected, found) -> None:
    """Scores [N, K] (or [K]) of two backends or runs are the same model, by the project's
    one definition (data_processing.core.agreement): float32 rounding, equal top-1."""
    from data_processing.core import agreement

    same = agreement.compare(np.atleast_2d(expected), np.atleast_2d(found))
    assert same.passed, same.describe()


def edit_params(path: Path, **sections) -> None:
    """Merge sections into a params.yaml (a None value deletes the key)."""
    data = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_stage(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m module args` in cwd, as dvc would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


BIN = Path(sys.executable).parent
OFFLINE_TEMPLATE = ".dvc/plots/offline.html"  # built by `make install`


def tool_env(**extra: str) -> dict[str, str]:
    """The environment `sh` runs tools in (the venv first on PATH, as the Makefile does; a
    git identity), plus `extra`."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **extra,
    }


def sh(*cmd: str, cwd: Path, check: bool = True, stdout_only: bool = False) -> str:
    """Run a command in `tool_env()`; return its output (stdout and stderr, or stdout alone,
    for JSON)."""
    env = tool_env()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def commit_and_repro(repo: Path, dataset: str, message: str) -> None:
    """`dvc add` datasets/raw/<dataset>, commit everything, then run the real `dvc repro`."""
    sh("dvc", "add", "-q", f"datasets/raw/{dataset}", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", message, cwd=repo)
    sh("dvc", "repro", cwd=repo)


def _stage_outputs(lock: Path) -> set[str]:
    """Every output path dvc.lock records (those in git too: cache: false metrics and plots)."""
    if not lock.is_file():
        return set()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {out["path"] for stage in stages.values() for out in stage.get("outs", [])}


def copy_project(repo: Path, models: tuple[str, ...] = ("mlp", "cnn")) -> Path:
    """Copy the project (tracked and new files, and the offline plot template) into a new git
    repo at `repo`, with params for tiny data: `models` only and one hyperparameter set,
    `quick`. The caller adds datasets."""
    assert (ROOT / OFFLINE_TEMPLATE).is_file(), f"{OFFLINE_TEMPLATE} missing: run `make install`"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    generated = _stage_outputs(ROOT / "dvc.lock")  # this workspace's results are not copied
    for rel in [*files, OFFLINE_TEMPLATE]:
        if any(rel == out or rel.startswith(out + "/") for out in generated):
            continue
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    (repo / "dvc.lock").unlink(missing_ok=True)
    grid = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    edit_params(repo / "params.yaml", models=None, hparams=None)
    edit_params(
        repo / "params.yaml",
        datasets=[],
        models={m: grid[m] for m in models},
        train={"image_size": [16, 16], "early_stopping": {"monitor": "val/loss", "patience": 4}},
        hparams={"quick": {"epochs": 12, "batch_size": 8, "learning_rate": 0.003}},
        select={"min_f1": 0.0, "min_precision": 0.0, "min_recall": 0.0},
        shard={"n_samples": 6},
        evaluate={"n_failures": 4, "profile_repeats": 3},
    )
    sh("git", "init", "-q", cwd=repo)
    return repo


def build_bundle(project: Path, calibrate: bool = False) -> Path:
    """Train and export a tiny mlp (cell tiny-mlp-quick) through the real stage modules in
    `project`; return its bundle. Export copies code relative to the cwd, so the packages
    are copied in first. Without `calibrate` the bundle serves the model's own scores (no
    temperature: what a bundle from before calibration.json served)."""
    for package in ("data_processing", "models"):
        ignore = shutil.ignore_patterns("runs", "plots", "metrics", "__pycache__")
        shutil.copytree(ROOT / package, project / package, ignore=ignore)
    if not (project / "params.yaml").exists():
        (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_seed_dataset(project / "datasets/raw/tiny", {"train": 8, "test": 4})
    edit_params(
        project / "params.yaml",
        datasets=["tiny"],
        train={"image_size": [8, 8]},
        hparams={"quick": {"epochs": 2, "batch_size": 8}},
        evaluate={"n_failures": 2, "profile_repeats": 1},
        calibrate={"temperature": calibrate, "threshold": "max_f1" if calibrate else "none"},
    )
    raw, norm, cell = "datasets/raw/tiny", "datasets/normalized/tiny", ("tiny", "mlp", "quick")
    for module, *args in (
        ("data_processing.normalize", raw, norm),
        ("data_processing.validate", raw, norm, "datasets/reports/tiny"),
        ("data_processing.shard", raw, norm, "datasets/shards/tiny"),
        ("models.train", *cell),
        ("models.evaluate", *cell),
        ("models.export", *cell),
    ):
        proc = run_stage(module, *args, cwd=project)
        assert proc.returncode == 0, f"{module}: {proc.stderr[-2000:]}"
    return project / "models/runs/tiny-mlp-quick/bundle"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    """The HTTP status of GET url; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return 0


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    """Poll a server's /v2/health/ready until 200; fail with its log if it exits first or
    is not ready within `timeout` seconds (TF import, bundle load and warm-up)."""
    deadline = time.monotonic() + timeout
    while http_status(url + "/v2/health/ready") != 200:
        assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a server and wait for it; SIGKILL it if it does not exit within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# Fixtures that live with their helpers in tests/servers.py, registered here for every module
# (imported last: servers.py imports this module's helpers).
from servers import releases  # noqa: E402, F401


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """moto's S3 server on 127.0.0.1 with one bucket (tests/remotes.py), the AWS_* variables a
    user sets for a real bucket in the environment; yield its URL."""
    from remotes import AWS_ENV, moto_s3  # remotes imports this module

    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    with moto_s3(tmp_path / "moto.log") as url:
        yield url
