"""Stage errors: each names the file, row, field and what was expected, and ends the stage
with one clear line and exit status 2 (`exit_on_error`).

StageError is the base; its kinds say whose fault it is: DataError (the input data or
params.yaml), CheckError (the stage's own result failed a check: the gate, an ONNX mismatch,
a deploy test) and CommandError (a tool it runs, such as dvc or git, failed)."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class StageError(Exception):
    """A stage cannot go on.

    Attributes:
        file: the offending file (or folder).
        expected: what should have been there.
        row: 1-based line number or element index, when there is one.
        field: column, key or parameter name, when there is one.
        found: what was there instead.
        hint: a "did you mean" or a fix.
    """

    file: Path | str
    expected: str
    row: int | str | None = None
    field: str | None = None
    found: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = str(self.file)
        if self.row is not None:
            where += f", row {self.row}"
        if self.field is not None:
            where += f", field {self.field!r}"
        msg = f"{where}: expected {self.expected}"
        if self.found is not None:
            msg += f"; found {self.found}"
        if self.hint:
            msg += f" ({self.hint})"
        return msg


class DataError(StageError):
    """Bad input data or configuration (params.yaml, a command-line value)."""


class CheckError(StageError):
    """The stage's result failed a check: the gate, an ONNX mismatch, a deploy test."""


class CommandError(StageError):
    """A tool the stage runs (dvc, git) failed or did not finish."""


def exit_on_error(func):
    """Decorate a stage `main()`: print a StageError as one clear line and exit with status 2."""
    import functools
    import sys

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StageError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
