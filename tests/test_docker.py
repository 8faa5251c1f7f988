"""Static checks of deployment/Dockerfile.{train,serve} and .dockerignore (Docker cannot run
here): bases, pinned installs, COPY sources that exist and are not ignored, the serve image's
entry point, port, health check and user, and its lock (deployment/requirements-serve.lock:
the main lock's versions, no TensorFlow; tests/test_onnx.py serves with TensorFlow blocked).
See deployment/DOCKER.md."""

import ast
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

DOCKERFILES = {name: ROOT / f"deployment/Dockerfile.{name}" for name in ("train", "serve")}
BASE = "python:3.11-slim"
BUILD_ARGS = {"BUNDLE": "models/runs/digits-cnn-base/bundle"}  # documented in DOCKER.md
DOCS = ROOT / "deployment/DOCKER.md"
LOCKS = {"train": "requirements.lock", "serve": "deployment/requirements-serve.lock"}
NO_TENSORFLOW = ("tensorflow", "keras", "tf-keras", "tensorboard", "tf2onnx")  # not in serve


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined


def parse(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, `\\` continuations joined."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path}: a continued line at the end"
    return instructions


def words(instruction: Instruction) -> list[str]:
    """The arguments of an instruction, in exec (JSON) form or shell form."""
    if instruction.args.startswith("["):
        return json.loads(instruction.args)
    return shlex.split(instruction.args)


def expand(text: str, args: dict[str, str]) -> str:
    for name, value in args.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in text, f"an undocumented variable in {text!r}"
    return text


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: `**/` any depth, `*` and `?` within one name."""
    out = re.escape(pattern.strip("/"))
    out = out.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    return re.compile(out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "$")


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repo root) out of the context.

    Docker's rules, as far as this file needs them: a pattern matches the path or one of its
    parent folders, from the context root (no basename matching as in .gitignore); the last
    matching pattern wins, and `!` re-includes.
    """
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern(pattern.removeprefix("!"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request) -> tuple[str, list[Instruction]]:
    return request.param, parse(DOCKERFILES[request.param])


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def test_slim_python_311_base(dockerfile) -> None:
    name, instructions = dockerfile
    assert instructions[0].keyword == "FROM", f"{name}: FROM comes first"
    assert [i.args for i in only(instructions, "FROM")] == [BASE]


def test_installs_the_lock_then_the_package(dockerfile) -> None:
    name, instructions = dockerfile
    runs = [i.args for i in only(instructions, "RUN")]
    lock_file = Path(LOCKS[name])
    lock = [k for k, r in enumerate(runs) if f"pip install -r {lock_file.name}" in r]
    package = [k for k, r in enumerate(runs) if "pip install --no-deps" in r and " ." in r]
    assert lock and package and lock[0] < package[0], f"{name}: {runs}"
    copied = [src for i in only(instructions, "COPY") for src in words(i)[:-1]]
    assert str(lock_file) in copied and "pyproject.toml" in copied


def _pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock; every requirement must be name==version."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{path.name}: not pinned: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_serve_lock_is_the_main_locks_versions_without_tensorflow() -> None:
    serve, main = _pins(ROOT / LOCKS["serve"]), _pins(ROOT / LOCKS["train"])
    differ = {n: (v, main.get(n)) for n, v in serve.items() if main.get(n) != v}
    assert not differ, f"serve lock version != requirements.lock (or missing there): {differ}"
    assert not set(NO_TENSORFLOW) & set(serve), "the serve image must not install TensorFlow"
    # what the server imports to serve ONNX (deployment/server, a bundle's serving.py)
    for needed in ("fastapi", "uvicorn", "httptools", "uvloop", "orjson", "onnxruntime"):
        assert needed in serve, needed
    for needed in ("numpy", "pillow", "prometheus-client", "python-multipart"):
        assert needed in serve, needed


def test_serve_image_runs_onnx() -> None:
    """No TensorFlow in the image: the onnx backend, so that a bundle without model.onnx
    fails at start with a clear message, not on an import."""
    assert flag(serve_cmd(), "--backend") == "onnx"


def test_copy_sources_exist_and_are_in_the_context(dockerfile) -> None:
    name, instructions = dockerfile
    declared = {i.args.split("=")[0] for i in only(instructions, "ARG")}
    assert only(instructions, "ADD") == [], f"{name}: use COPY (ADD fetches URLs, unpacks tars)"
    for copy in only(instructions, "COPY"):
        sources = [w for w in words(copy)[:-1] if not w.startswith("--")]
        assert sources, copy
        for source in sources:
            if "$" in source:  # a build arg: declared here, documented, given an example
                arg = source.strip("${}")
                assert arg in declared and arg in BUILD_ARGS, f"{name}: {source}"
                assert f"--build-arg {arg}=" in DOCS.read_text(), f"{arg} is not in {DOCS}"
                assert not ignored(f"{expand(source, BUILD_ARGS)}/model.keras"), source
                continue
            matches = sorted(ROOT.glob(source))
            assert matches, f"{name}: COPY {source}: no such file in the repo"
            for match in matches:
                rel = match.relative_to(ROOT).as_posix()
                assert not ignored(rel), f"{name}: COPY {rel}, which .dockerignore leaves out"


def test_dockerignore_leaves_out_environments_caches_and_outputs() -> None:
    for path in (
        ".venv/bin/python",
        ".dvc/cache/files/md5/00/ab",
        ".dvc/tmp/lock",
        "dvc_plots/index.html",
        "models/__pycache__/x.pyc",
        "deployment/__pycache__/serve.cpython-311.pyc",
        "tests/artifacts/page.png",
        "bench/results/ingest.json",
        "models/runs/digits-cnn-base/train/model.keras",
        ".git/HEAD",
    ):
        assert ignored(path), path
    for path in ("deployment/server/serve.py", "requirements.lock", "models/common/training.py"):
        assert not ignored(path), path


def serve_cmd() -> list[str]:
    instructions = parse(DOCKERFILES["serve"])
    (cmd,) = only(instructions, "CMD")
    assert only(instructions, "ENTRYPOINT") == [], "the whole command is in CMD (exec form)"
    assert cmd.args.startswith("["), "exec form: signals reach the server, not a shell"
    return words(cmd)


def flag(cmd: list[str], name: str) -> str:
    assert cmd.count(name) == 1, f"{name} once in {cmd}"
    return cmd[cmd.index(name) + 1]


def test_serve_entry_point_is_the_server_module() -> None:
    cmd = serve_cmd()
    assert cmd[:2] == ["python", "-m"], cmd
    module = cmd[2]
    as_file = ROOT / (module.replace(".", "/") + ".py")
    assert as_file.is_file() or (ROOT / module.replace(".", "/") / "__main__.py").is_file()
    assert module == "deployment.server.serve"
    assert flag(cmd, "--host") == "0.0.0.0"  # reachable through the published port
    # every flag the image passes is one the server knows (catches renamed options)
    usage = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 0, usage.stderr
    for word in cmd[3:]:
        if word.startswith("--"):
            assert word in usage.stdout, f"{word}: not an option of {module}"


def test_serve_bundle_and_feedback_paths() -> None:
    instructions = parse(DOCKERFILES["serve"])
    cmd = serve_cmd()
    copies = [words(i) for i in only(instructions, "COPY")]
    assert ["${BUNDLE}", "/bundle"] in copies  # the bundle is baked in at /bundle
    assert flag(cmd, "--bundle") == "/bundle"
    feedback = flag(cmd, "--feedback-dir")
    volumes = [w for i in only(instructions, "VOLUME") for w in words(i)]
    assert feedback in volumes, "feedback must outlive the container"
    runs = " ".join(i.args for i in only(instructions, "RUN"))
    assert f"chown app:app {feedback}" in runs, "the server's user must be able to write it"


def test_serve_port_is_the_same_in_expose_cmd_and_healthcheck() -> None:
    instructions = parse(DOCKERFILES["serve"])
    (expose,) = only(instructions, "EXPOSE")
    port = int(expose.args.split("/")[0])
    assert int(flag(serve_cmd(), "--port")) == port
    (health,) = only(instructions, "HEALTHCHECK")
    options, _, command = health.args.partition(" CMD ")
    assert "--start-period=" in options, "TF and the bundle take seconds to load"
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"], "no curl in slim images"
    ast.parse(probe[2])  # valid Python
    assert f"http://127.0.0.1:{port}/v2/health/ready" in probe[2]
    assert "urllib.request.urlopen(" in probe[2]  # raises on 503: not ready is unhealthy


def test_serve_runs_as_a_non_root_user() -> None:
    instructions = parse(DOCKERFILES["serve"])
    users = [k for k, i in enumerate(instructions) if i.keyword == "USER"]
    assert users, "USER is not set: the server would run as root"
    user = instructions[users[-1]].args.split(":")[0]
    assert user not in ("root", "0")
    assert any("useradd" in i.args and user in i.args for i in only(instructions, "RUN"))
    last_run = max(k for k, i in enumerate(instructions) if i.keyword == "RUN")
    assert users[-1] > last_run, "USER after the last RUN: nothing runs as root after it"


def test_train_image_runs_dvc_repro_on_the_mounted_repo() -> None:
    instructions = parse(DOCKERFILES["train"])
    (cmd,) = only(instructions, "CMD")
    assert words(cmd) == ["dvc", "repro"]
    assert [i.args for i in only(instructions, "WORKDIR")][-1] == "/repo"
    runs = " ".join(i.args for i in only(instructions, "RUN"))
    assert "apt-get install" in runs and " git" in runs  # dvc needs git
    assert "safe.directory /repo" in runs  # the mounted checkout belongs to the host user
    for text in (DOCKERFILES["train"].read_text(), DOCS.read_text()):
        assert '-v "$PWD:/repo"' in text
    # the pipeline's outputs are not baked in: no models/runs, datasets or the whole models/
    sources = [s for i in only(instructions, "COPY") for s in words(i)[:-1]]
    assert not any(s.rstrip("/") in ("models", "datasets", ".") for s in sources), sources


def test_docs_give_the_build_and_run_commands() -> None:
    text = DOCS.read_text()
    for name in DOCKERFILES:
        assert f"docker build -f deployment/Dockerfile.{name}" in text
    assert "docker run" in text and "-p 8080:8080" in text


def test_serve_image_copies_only_the_deployment_package() -> None:
    """The serve image copies deployment/ alone; the `server` import contract (pyproject.toml,
    tests/test_layout.py) keeps the server's imports inside it, and a bundle's code/ brings
    its own models.common, loaded by deployment.server.bundle from the bundle path."""
    copied = [s for i in only(parse(DOCKERFILES["serve"]), "COPY") for s in words(i)[:-1]]
    assert "deployment" in {s.strip("./") for s in copied}
    assert not {"models", "data_processing"} & {s.strip("./") for s in copied}
