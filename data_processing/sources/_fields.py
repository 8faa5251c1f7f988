"""Typed access to annotation text and JSON for the importers: every failure is a DataError
naming the file, the row or element, the field and what was expected."""

import json
import math
from pathlib import Path

from data_processing.core.errors import DataError
from data_processing.sources._common import suggest

_MISSING = object()


def read_text(path: Path, expected: str) -> str:
    """Read UTF-8 text (a UTF-8 BOM is dropped); DataError when missing or not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(path, expected, found="no such file") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(path, "UTF-8 text", found="a UTF-16 byte-order mark", hint="save as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            path, "UTF-8 text", found=f"byte {data[err.start]:#04x} at offset {err.start}"
        ) from None


def load_json(path: Path, expected: str) -> object:
    """Parse a JSON file; DataError with line and column when it is malformed."""
    text = read_text(path, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        found = f"{err.msg} at column {err.colno}"
        raise DataError(path, "valid JSON", row=err.lineno, found=found) from None
    except RecursionError:
        raise DataError(path, "valid JSON", found="nesting too deep to read") from None


def _kind_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names |= {int: "an integer", float: "a number"}
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")


def get(
    obj: object,
    key: str,
    kinds: type | tuple[type, ...],
    file: Path,
    row: int | str | None,
    default: object = _MISSING,
    prefix: str = "",
) -> object:
    """Return obj[key] when it has one of `kinds`; DataError naming file, row and field else."""
    field = prefix + key
    if not isinstance(obj, dict):
        where = prefix.rstrip(".") or None
        raise DataError(file, "a JSON object", row=row, field=where, found=_kind_name(obj))
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    names = " or ".join(_kind_name(k()) if k is not type(None) else "null" for k in kinds)
    if key not in obj:
        if default is not _MISSING:
            return default
        hint = suggest(key, [k for k in obj if isinstance(k, str)])
        raise DataError(file, f"{names} here", row=row, field=field, found="nothing", hint=hint)
    value = obj[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        found = f"{_kind_name(value)} {_short(value)}"
        raise DataError(file, names, row=row, field=field, found=found)
    return value


def number(value: object, file: Path, row: int | str | None, field: str) -> float:
    """A finite int or float (not a boolean) as float; DataError otherwise."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(result := float(value)):
                return result
    except OverflowError:
        pass
    raise DataError(file, "a finite number", row=row, field=field, found=_short(value))


def parse_number(text: str | None, file: Path, row: int | str | None, field: str) -> float:
    """A finite number written as text (XML, YOLO); DataError otherwise."""
    try:
        value = float((text or "").strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(file, "a finite number", row=row, field=field, found=_short(text))
    return value


def unknown_keys(obj: dict, known: tuple[str, ...], file: Path, row: int | str | None) -> None:
    """DataError for the first key outside `known`, with a "did you mean"."""
    for key in obj:
        if key not in known:
            raise DataError(
                file,
                f"only the keys {', '.join(known)}",
                row=row,
                field=str(key),
                found="an unknown key",
                hint=suggest(str(key), list(known)),
            )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
