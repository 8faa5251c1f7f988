"""What the benches share: where a figure comes from, and their command lines."""

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import PIL


def machine(**extra) -> dict:
    """Describe where the figures come from; `extra` adds a bench's own entries."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        **extra,
    }


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A bench's argument parser: `python -m bench.<module>`, its docstring as the help."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_keep(parser: argparse.ArgumentParser) -> None:
    """--keep DIR: generate the bench's data into a new folder and keep it."""
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="generate into this new folder and keep it"
    )


def check_keep(parser: argparse.ArgumentParser, keep: Path | None) -> None:
    """Refuse a --keep folder that already holds something."""
    if keep and keep.exists() and any(keep.iterdir()):
        parser.error(f"--keep {keep}: folder exists and is not empty")
