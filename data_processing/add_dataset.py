"""Add a dataset in one command: validate it, copy it to datasets/raw/NAME, track it with DVC.

Reads PATH (a dataset folder in a source format, see data_processing/sources/) and
params.yaml. Broken data is refused before anything is copied: the validation report goes to
stderr and the command exits non-zero. Otherwise it writes datasets/raw/NAME/ (a copy, all or
nothing), runs `dvc add` (datasets/raw/NAME.dvc, datasets/raw/.gitignore), appends NAME to
`datasets:` in params.yaml (comments and layout kept; a non-default --format also goes to
`normalize.formats`), declares its registry artifact NAME-classifier in dvc.yaml, and `git add`s
those files. Nothing is committed.

Run from the project root:
    python -m data_processing.add_dataset ~/data/shapes --name shapes [--format auto] [--force]
"""

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

from data_processing import normalize, sources
from data_processing.core import cli
from data_processing.core.errors import DataError, exit_on_error
from data_processing.core.io import staged_dir, write_text
from data_processing.core.params import PARAMS_FILE, load_params, name_clashes, read_params
from data_processing.validate import ValidateParams, fail_on_errors, load_splits, validate

NAME_PATTERN = re.compile(r"[a-z0-9_-]+")  # the name becomes a DVC matrix value and stage name
RAW_ROOT = Path("datasets/raw")
DEFAULT_FORMAT = normalize.AUTO  # detect; the normalize stage detects too for unlisted names


def check_target(path: Path, name: str, force: bool, raw_root: Path = RAW_ROOT) -> Path:
    """Return datasets/raw/NAME after checking the name, the source and the destination.

    Raises:
        DataError: a bad name, a missing source, or an existing destination without --force.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise DataError(
            "--name",
            f"a name matching {NAME_PATTERN.pattern} (it becomes a DVC stage name)",
            found=repr(name),
        )
    grid = read_params() if PARAMS_FILE.is_file() else {}
    grid = {**grid, "datasets": [*(grid.get("datasets") or []), name]}
    for clash, owner in name_clashes(grid):
        raise DataError(
            "--name",
            "a name no model is served by (each dataset's model is served by its name)",
            found=f"{clash!r}, the name of a cell of dataset {owner!r}",
            hint="choose another --name",
        )
    if not Path(path).is_dir():
        raise DataError(path, "a dataset folder", found="no such folder")
    dest = Path(raw_root) / name
    if dest.exists() and not force:
        raise DataError(
            dest,
            "a new dataset name",
            found="an existing folder",
            hint="pass --force to replace it, or choose another --name",
        )
    src, dst = Path(path).resolve(), dest.resolve()
    if src == dst or src.is_relative_to(dst) or dst.is_relative_to(src):
        raise DataError(path, f"a folder outside {dest}", found="the destination itself")
    return dest


def check_project(root: Path = Path(".")) -> None:
    """The command must run at the root of a git repository initialised for DVC."""
    missing = [p for p in (".dvc", str(PARAMS_FILE)) if not (root / p).exists()]
    if missing:
        raise DataError(
            root.resolve(),
            "the project root (with .dvc/ and params.yaml)",
            found=f"no {' and no '.join(missing)}",
            hint="cd to the project root; `dvc init` if new",
        )
    _run(["git", "rev-parse", "--git-dir"], cwd=root)


def check_data(path: Path, fmt: str, params: ValidateParams) -> tuple[str, dict]:
    """Normalize PATH into a temporary folder and validate it.

    Returns:
        (the importer used, "auto" resolved; the validation report).

    Raises:
        DataError: an unknown or undetectable format, data the importer rejects, or a report
            holding errors (printed to stderr).
    """
    if fmt != normalize.AUTO and fmt not in sources.available():
        known = f"{normalize.AUTO} or one of {sources.available()}"
        raise DataError("--format", f"a source format: {known}", found=repr(fmt))
    resolved = normalize.resolve_format(Path(path), fmt)
    options = load_params("normalize", normalize.NormalizeParams).options(resolved)
    splits = normalize.parse(Path(path), resolved, options)
    with tempfile.TemporaryDirectory() as tmp:
        normalize.write(splits, Path(tmp) / "normalized")  # the same files the stage writes
        found = validate(Path(path), load_splits(Path(tmp) / "normalized"), params)
    try:
        fail_on_errors(Path(path), found)
    except DataError as err:
        err.hint = "refused: nothing was copied"
        raise
    return resolved, found


def copy_dataset(path: Path, dest: Path) -> None:
    """Copy PATH to dest whole or not at all (a temporary sibling, renamed)."""
    with staged_dir(dest) as tmp:
        shutil.copytree(path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))


def add_to_params(name: str, fmt: str, path: Path = PARAMS_FILE) -> None:
    """Append NAME to `datasets:` (and `normalize.formats` unless fmt is the default).

    ruamel.yaml round-trip mode keeps comments, key order, flow style and quoting.
    """
    yaml = YAML()  # round-trip ("rt") by default
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long commented lines
    yaml.representer.add_representer(type(None), _represent_null)  # `key: null` stays, not `key:`
    data = yaml.load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data.get("datasets"), list):
        raise DataError(path, "a `datasets:` list", field="datasets", found="none")
    if name not in data["datasets"]:
        data["datasets"].append(name)
    if fmt != DEFAULT_FORMAT:
        formats = data.setdefault("normalize", {}).setdefault("formats", {})
        if not formats or formats.fa.flow_style():  # keep `formats: {}` on one line
            formats.fa.set_flow_style()
        formats[name] = fmt
    text = io.StringIO()
    yaml.dump(data, text)
    write_text(path, text.getvalue())


def add_artifact(name: str, path: Path = Path("dvc.yaml")) -> None:
    """Declare NAME's production bundle as the registry artifact NAME-classifier in dvc.yaml
    `artifacts:` (deployment/release/registry.py; comments and layout kept)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    data = yaml.load(Path(path).read_text(encoding="utf-8"))
    artifacts = data.setdefault("artifacts", {})
    artifacts.setdefault(
        f"{name}-classifier",
        {
            "path": f"deployment/{name}/production",
            "type": "model",
            "desc": f"The promoted {name} classifier, a self-contained bundle (models/export.py)",
            "labels": ["vision", "classification"],
        },
    )
    text = io.StringIO()
    yaml.dump(data, text)
    write_text(path, text.getvalue())


def _represent_null(representer, _data: None):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _run(cmd: list[str], cwd: Path = Path(".")) -> str:
    """Run a command; DataError with its stderr when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(
            " ".join(cmd), "success", found=" / ".join(tail) or f"exit {proc.returncode}"
        )
    return proc.stdout


def track(dest: Path, name: str, fmt: str) -> list[str]:
    """`dvc add` the copy, list it in params.yaml and `git add` the files; return them."""
    try:
        _run([sys.executable, "-m", "dvc", "add", str(dest)])
    except DataError as err:
        shutil.rmtree(dest, ignore_errors=True)
        err.hint = f"removed {dest}; `dvc checkout {dest}.dvc` restores a replaced version"
        raise
    add_to_params(name, fmt)
    add_artifact(name)
    staged = [f"{dest}.dvc", str(dest.parent / ".gitignore"), str(PARAMS_FILE), "dvc.yaml"]
    _run(["git", "add", "--", *staged])
    return staged


def summary(name: str, fmt: str, found: dict, dest: Path, staged: list[str]) -> str:
    """What was done, the first warnings, and what to run next."""
    counts = ", ".join(f"{s}: {v['images']} images" for s, v in found["splits"].items())
    lines = [f"added {name!r} ({fmt} format; {counts}) -> {dest}"]
    lines += [f"warning: {w}" for w in found["warnings"][:5]]
    if len(found["warnings"]) > 5:
        lines += [f"... {len(found['warnings']) - 5} more warning(s): see validate@{name}"]
    lines += [f"staged in git: {', '.join(staged)}", "next:"]
    lines += [f"  dvc repro                  # normalize@{name}, validate@{name}, train, ..."]
    lines += [f'  git commit -m "Add dataset {name}"']
    return "\n".join(lines)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(__doc__)
    parser.add_argument("path", type=Path, help="the dataset folder to add")
    parser.add_argument("--name", required=True, help="dataset name: [a-z0-9_-]+")
    parser.add_argument(
        "--format", default=DEFAULT_FORMAT, help="importer name, or auto (default): detect"
    )
    parser.add_argument("--force", action="store_true", help="replace datasets/raw/NAME")
    return parser.parse_args(argv)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    params = load_params("validate", ValidateParams)
    dest = check_target(args.path, args.name, args.force)
    check_project()
    fmt, found = check_data(args.path, args.format, params)
    copy_dataset(args.path, dest)
    staged = track(dest, args.name, args.format)
    print(summary(args.name, fmt, found, dest, staged))


if __name__ == "__main__":
    main()
