"""The real server in tests: start `python -m deployment.server.serve` on a free 127.0.0.1
port, call it over HTTP, and the tiny bundles and releases it serves. One copy, for every
test module."""

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ROOT,
    build_bundle,
    edit_params,
    free_port,
    pattern,
    stop_process,
    wait_ready,
    write_seed_dataset,
)
from filelock import FileLock
from PIL import Image

CELL = "tiny-mlp-quick"  # the cell build_bundle and releases train
POINTER = "deployment/tiny/production.json"  # the tiny dataset's production pointer
READY_TIMEOUT = 60  # seconds: TF import, bundle load and warm-up


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen | None
    log: Path
    feedback: Path  # its --feedback-dir
    bundle: Path | None = None
    name: str = CELL  # the served model's name
    before_ready: list = field(default_factory=list)  # (ready, live, infer) statuses seen

    def logged(self) -> str:
        return self.log.read_text()


def start(
    root: Path,
    *flags: str | Path,
    name: str = "serve",
    cwd: Path | None = None,
    feedback: Path | None = None,
    timeout: float = READY_TIMEOUT,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> Server:
    """`python -m deployment.server.serve --port P --feedback-dir ... *flags` in cwd (root),
    once it answers ready (at once with wait=False); its log is root/<name>-<port>.log. One
    process (--workers 1) unless flags say otherwise; `env` replaces the environment."""
    port = free_port()
    log = root / f"{name}-{port}.log"
    feedback = feedback or root / f"{name}-{port}-feedback"
    cmd = [sys.executable, "-m", "deployment.server.serve", "--port", str(port)]
    if "--workers" not in map(str, flags):
        cmd += ["--workers", "1"]
    cmd += ["--feedback-dir", feedback, *flags]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(map(str, cmd)), cwd=cwd or root, stdout=out, stderr=out, env=env
        )
    srv = Server(f"http://127.0.0.1:{port}", port, proc, log, Path(cwd or root, feedback))
    flag_list = list(map(str, flags))
    if "--bundle" in flag_list:
        srv.bundle = Path(flag_list[flag_list.index("--bundle") + 1])
    if wait:
        wait_ready(proc, srv.url, log, timeout)
    return srv


def start_watching(repo: Path) -> Server:
    """The server of a project copy, serving its production pointer (checked every 0.3 s)
    and storing feedback where the watch reads it."""
    flags = ("--watch-interval", "0.3")  # every deployment/<dataset>/production.json
    return start(repo, *flags, cwd=repo, feedback=Path("datasets/raw/feedback"), timeout=90)


def stop(srv: Server, timeout: float = 15) -> None:
    """SIGTERM (SIGKILL after `timeout` s)."""
    if srv.proc is not None:
        stop_process(srv.proc, timeout=timeout)


@contextmanager
def running(root: Path, *flags: str | Path, **options) -> Iterator[Server]:
    """`start` for a with-block; stopped on exit."""
    srv = start(root, *flags, **options)
    try:
        yield srv
    finally:
        stop(srv)


_BUNDLES: dict[str, Path] = {}  # the tiny bundle, once found or built, see shared_bundle


def shared_bundle(factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle, built once per test run and shared by the modules that only serve
    it. Under xdist the workers share the run's base folder, and a file lock lets the first
    build it while the others wait (pytest-xdist's recipe): one build, not one per worker."""
    if "tiny" not in _BUNDLES:
        base = factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent  # the folder every worker's base temp sits in
        project, done = base / "shared-tiny" / "project", base / "shared-tiny.done"
        with FileLock(str(base / "shared-tiny.lock")):
            if not done.is_file():
                shutil.rmtree(project, ignore_errors=True)  # a build a killed worker left
                project.mkdir(parents=True)
                build_bundle(project)
                done.touch()
        _BUNDLES["tiny"] = project / "models/runs/tiny-mlp-quick/bundle"
    return _BUNDLES["tiny"]


# ---- requests ----


def call(srv: Server, method: str, path: str, body=None, headers=None, timeout: float = 30):
    """(status, parsed JSON or raw bytes) of one request; a connection error is status 0."""
    if isinstance(body, (dict, list)):
        body, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    request = urllib.request.Request(srv.url + path, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, raw, head = err.code, err.read(), err.headers
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return 0, None
    is_json = head.get("content-type", "").startswith("application/json")
    return status, json.loads(raw) if is_json else raw


def encode(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png(label: int = 0, seed: int | None = None, size: int = 8, mode: str = "L") -> bytes:
    """A PNG of class `label` (conftest.pattern), its noise drawn from `seed` (default: the
    label), converted to `mode`."""
    rng = np.random.default_rng(label if seed is None else seed)
    return encode(Image.fromarray(pattern(label, rng, size), "L").convert(mode))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_input(*images: bytes) -> dict:
    """A v2 infer body of encoded images (BYTES, base64)."""
    data = [b64(i) for i in images]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}]}


def multipart(data: bytes, field: str = "file") -> tuple[bytes, dict]:
    """(body, headers) of a multipart/form-data upload of one PNG."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def version(srv: Server) -> str:
    return call(srv, "GET", "/v2")[1]["model_version"]


def metric(srv: Server, name: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    text = call(srv, "GET", "/metrics")[1].decode()
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else 0.0


# ---- two releases of one cell, for hot reload ----


def _stages(projects: list[Path], *steps: tuple[str, ...]) -> None:
    """Run each stage in every project at once (the projects are independent)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    for module, *args in steps:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=p,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for p in projects
        ]
        for proc in procs:
            out = proc.communicate(timeout=300)[0]
            assert proc.returncode == 0, f"{module}: {out[-2000:]}"


@dataclass
class Release:
    bundle: str  # relative to the repo root, as deployment/release/select.py writes it
    eval_samples: str
    sha256: str

    def pointer(self, **changes) -> dict:
        return {
            "name": CELL,
            "dataset": "tiny",
            "model": "mlp",
            "hparams": "quick",
            "bundle": self.bundle,
            "sha256": self.sha256,
            "eval_samples": self.eval_samples,
            "metrics": {},
            **changes,
        }


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Release, Release]:
    """(repo root, release a, release b): one cell trained with seeds 0 and 1, two projects
    side by side so that the two trainings overlap."""
    root = tmp_path_factory.mktemp("reload")
    a, b = root / "a", root / "b"
    for package in ("data_processing", "models"):  # export copies code relative to the cwd
        ignore = shutil.ignore_patterns("runs", "plots", "metrics", "__pycache__")
        shutil.copytree(ROOT / package, a / package, ignore=ignore)
    (a / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    write_seed_dataset(a / "datasets/raw/tiny", {"train": 8, "test": 4})
    edit_params(
        a / "params.yaml",
        base={"seed": 0},
        datasets=["tiny"],
        train={"image_size": [8, 8]},
        hparams={"quick": {"epochs": 2, "batch_size": 8, "learning_rate": 0.003}},
        evaluate={"n_failures": 2, "profile_repeats": 1},
    )
    raw, norm = "datasets/raw/tiny", "datasets/normalized/tiny"
    _stages(
        [a],
        ("data_processing.normalize", raw, norm),
        ("data_processing.shard", raw, norm, "datasets/shards/tiny"),
    )
    shutil.copytree(a, b)
    edit_params(b / "params.yaml", base={"seed": 1})
    cell = ("tiny", "mlp", "quick")
    _stages([a, b], ("models.train", *cell), ("models.evaluate", *cell), ("models.export", *cell))
    found = []
    for name, project in (("a", a), ("b", b)):
        shutil.copytree(project / f"models/runs/{CELL}", root / f"releases/{name}")
        model = root / f"releases/{name}/bundle/model.keras"
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        found.append(Release(f"releases/{name}/bundle", f"releases/{name}/eval/samples.json", sha))
    assert found[0].sha256 != found[1].sha256
    return root, *found


def write_pointer(root: Path, pointer: dict | str) -> None:
    """Atomically, as data_processing.core.io.write_json does for deployment/release/select.py."""
    path = root / POINTER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(pointer if isinstance(pointer, str) else json.dumps(pointer, indent=2))
    os.replace(tmp, path)
