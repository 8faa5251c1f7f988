"""Command lines for the stage scripts: --help and clear usage errors from argparse.

Each stage's `main()` names its positional arguments; the description is the first line of
the module's docstring and the epilog its "Run:" example, so `--help` says what the stage
does and how dvc.yaml calls it. A wrong number of arguments exits 2 with the usage line.
"""

import argparse
import sys
from pathlib import Path


def parse(doc: str, *arguments: tuple[str, str], argv: list[str] | None = None) -> list[str]:
    """The values of `arguments` ((name, help), ...), in order, from the command line."""
    lines = (doc or "").strip().splitlines()
    run = [line.strip() for line in lines if line.strip().startswith("Run:")]
    summary = " ".join(lines[: lines.index("")] if "" in lines else lines[:1])
    parser = argparse.ArgumentParser(
        prog=prog(), description=summary or None, epilog=run[0] if run else None
    )
    for name, help_text in arguments:
        parser.add_argument(name, help=help_text)
    args = parser.parse_args(argv)
    return [getattr(args, name) for name, _ in arguments]


def prog() -> str:
    """ "python -m package.module" for the running module (how the docs and dvc.yaml call it)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return f"python -m {spec.name}" if spec else Path(sys.argv[0]).name


def paths(doc: str, *arguments: tuple[str, str], argv: list[str] | None = None) -> list[Path]:
    """`parse`, each value a Path."""
    return [Path(value) for value in parse(doc, *arguments, argv=argv)]


CELL = (
    ("dataset", "a dataset of params.yaml `datasets`"),
    ("model", "an architecture of params.yaml `models` (models/<name>.py)"),
    ("hparams", "a hyperparameter set of params.yaml `hparams`"),
)
