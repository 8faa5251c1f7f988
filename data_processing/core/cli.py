"""Command lines for the stage scripts: --help and clear usage errors from argparse.

Each stage's `main()` names its positional arguments; the description is the first line of
the module's docstring and the epilog its "Run:" example, so `--help` says what the stage
does and how dvc.yaml calls it. A wrong number of arguments exits 2 with the usage line.

`main` is the `reprovision <command>` console entry point (pyproject.toml): it runs the
command's module as `python -m <module>` would.
"""

import argparse
import runpy
import sys
from pathlib import Path

# reprovision <command> -> (module run as __main__, what it does)
COMMANDS = {
    "serve": ("deployment.server.serve", "serve the production model (page, v2, v1, /metrics)"),
    "sweep": ("models.sweep", "queue and run the grid as DVC experiments, in priority order"),
    "leaderboard": ("models.leaderboard", "the workspace's cells in one table"),
    "keep": ("models.keep", "commit one experiment's results to git"),
    "registry": ("deployment.release.registry", "register the promoted model in the GTO registry"),
    "rollback": ("deployment.release.rollback", "roll production back to the previous version"),
    "watch": ("deployment.release.watch", "continuous training from served feedback"),
    "add-dataset": ("data_processing.add_dataset", "check a dataset, copy it in, dvc add it"),
    "savedmodel": ("models.savedmodel", "write a bundle's TensorFlow SavedModel (TF Serving)"),
    "run": ("models.run", "dvc repro, quietly, then the leaderboard: what `make run` runs"),
    "predict": ("deployment.server.predict", "label image files with a production model"),
    "retention": ("deployment.server.retention", "purge expired uploads, or delete one"),
    "results": ("models.results", "write the README's and docs' results tables from the metrics"),
}
_command: str | None = None  # "reprovision <command>" while main() runs one


Argument = tuple[str, str] | tuple[str, str, None]  # (name, help), or optional: (name, help, None)


def parse(doc: str, *arguments: Argument, argv: list[str] | None = None) -> list[str | None]:
    """The values of `arguments` ((name, help), ...), in order, from the command line; an
    optional one (a third element, None) last, None when not given."""
    parser = make_parser(doc)
    for name, help_text, *optional in arguments:
        parser.add_argument(name, help=help_text, **({"nargs": "?"} if optional else {}))
    args = parser.parse_args(argv)
    return [getattr(args, name) for name, *_ in arguments]


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser named by `prog()`: the description is the docstring's first paragraph whole,
    the epilog its "Run:" line."""
    lines = (doc or "").strip().splitlines()
    run = [line.strip() for line in lines if line.strip().startswith("Run:")]
    summary = " ".join(lines[: lines.index("")] if "" in lines else lines[:1])
    return argparse.ArgumentParser(
        prog=prog(), description=summary or None, epilog=run[0] if run else None
    )


def prog() -> str:
    """ "reprovision <command>" for a command's module, however it was started; else
    "python -m package.module" (how dvc.yaml calls a stage)."""
    if _command:
        return _command
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None:
        return Path(sys.argv[0]).name
    named = [name for name, (module, _) in COMMANDS.items() if module == spec.name]
    return f"reprovision {named[0]}" if named else f"python -m {spec.name}"


def paths(doc: str, *arguments: Argument, argv: list[str] | None = None) -> list[Path | None]:
    """`parse`, each value a Path (None for an optional one not given)."""
    return [None if v is None else Path(v) for v in parse(doc, *arguments, argv=argv)]


RAW_DIR = ("raw_dir", "the raw dataset folder (datasets/raw/<name>)")
NORM_DIR = ("norm_dir", "its normalized JSON (datasets/normalized/<name>)")
CELL = (
    ("dataset", "a dataset of params.yaml `datasets`"),
    ("model", "an architecture of params.yaml `models` (models/<name>.py)"),
    ("hparams", "a hyperparameter set of params.yaml `hparams`"),
)


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: reprovision <command> [arguments]   (reprovision <command> --help)", ""]
    lines += [f"  {name:<{width}}{what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "Each is also `python -m <module>`; the stages run through `dvc repro`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`reprovision <command> [arguments]`: run the command's module with those arguments."""
    global _command
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"{usage()}\n\nreprovision: unknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(2)
    module = COMMANDS[argv[0]][0]
    _command = f"reprovision {argv[0]}"
    sys.argv = [_command, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
