"""Manifest reading with a schema check.

A manifest is a table with one row per record (CSV, TSV, Parquet or JSON Lines, chosen by suffix). Errors
name the file, the column and, for bad values, the row, e.g.
``manifest /x/y.csv: missing required column 'text' (found: path, label)``.
Row numbers in messages are 0-based data rows (the header is not counted), i.e. the DataFrame position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlp_core.data.errors import InvalidValueError, ManifestError, MissingColumnError, UnsupportedFormatError

__all__ = ["read_manifest", "check_manifest", "MANIFEST_SUFFIXES"]

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
#: Suffixes :func:`read_manifest` understands (CSV/TSV/JSONL may additionally end in .gz/.bz2/.xz/.zst/.zip).
MANIFEST_SUFFIXES = tuple(_FORMATS)

_TYPE_ALIASES: dict[Any, str] = {
    str: "str",
    "str": "str",
    "string": "str",
    int: "int",
    "int": "int",
    float: "float",
    "float": "float",
    bool: "bool",
    "bool": "bool",
    object: "any",
    "any": "any",
    None: "any",
}
_MAX_LISTED_ROWS = 5


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise UnsupportedFormatError(
            f"manifest {path}: unsupported suffix {''.join(path.suffixes) or '(none)'!r}; "
            f"expected one of {', '.join(MANIFEST_SUFFIXES)}"
        )
    if fmt == "parquet" and path.suffix.lower() in _COMPRESSION:
        raise UnsupportedFormatError(f"manifest {path}: Parquet files are compressed internally; drop the outer suffix")
    return fmt


def _normalise_required(required: Mapping[str, Any] | Sequence[str] | None) -> dict[str, str]:
    if required is None:
        return {}
    if isinstance(required, str):
        raise TypeError("required must be a list of column names or a {column: type} mapping, not a string")
    if isinstance(required, Mapping):
        out = {}
        for col, typ in required.items():
            if typ not in _TYPE_ALIASES:
                raise TypeError(f"unsupported type {typ!r} for column {col!r}; use str, int, float, bool or object")
            out[str(col)] = _TYPE_ALIASES[typ]
        return out
    return {str(col): "any" for col in required}


def _read(path: Path, fmt: str, str_columns: list[str]) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        # Read required string columns as text so identifiers like "00123" keep their leading zeros.
        # keep_default_na=False + na_values=[""] : only truly empty cells are missing ("NA" stays a string).
        return pd.read_csv(
            path,
            sep="," if fmt == "csv" else "\t",
            dtype={c: str for c in str_columns},
            keep_default_na=False,
            na_values=[""],
        )
    if fmt == "parquet":
        return pd.read_parquet(path)
    # dtype=False keeps JSON types as written (a quoted id stays a string).
    return pd.read_json(path, lines=True, dtype=False)


def read_manifest(
    path: str | Path,
    required: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Read a manifest table and check its schema.

    Args:
        path: ``.csv``/``.tsv``/``.jsonl``/``.ndjson`` (optionally ``.gz`` etc. compressed) or ``.parquet``/``.pq``.
        required: Required columns, either a list of names (presence and no empty values) or a mapping
            ``{name: type}`` with type ``str`` (non-blank strings), ``int`` (integers; integral floats and integer
            text accepted, column returned as int64), ``float`` (finite real numbers or numeric text, returned as
            float64), ``bool`` (booleans or true/false/1/0 text) or ``object`` (any non-missing value).
        allow_empty: Accept a manifest with zero data rows.

    Returns:
        The manifest as a DataFrame (all columns kept, default RangeIndex = 0-based row numbers).

    Raises:
        FileNotFoundError: The file does not exist.
        UnsupportedFormatError: Unknown suffix.
        MissingColumnError: A required column is absent (message names file, column and the columns found).
        InvalidValueError: A required column has the wrong dtype or empty values (message names the row).
        ManifestError: The file cannot be parsed, or has no rows and ``allow_empty`` is False.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path}: file not found")
    schema = _normalise_required(required)
    try:
        df = _read(path, fmt, [c for c, t in schema.items() if t == "str"])
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(f"manifest {path}: file is empty (no header)") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ManifestError(f"manifest {path}: cannot parse as {fmt}: {exc}") from exc
    df = df.reset_index(drop=True)
    df = check_manifest(df, schema, source=str(path))
    if len(df) == 0 and not allow_empty:
        raise ManifestError(f"manifest {path}: no data rows")
    return df


def check_manifest(
    df: pd.DataFrame, required: Mapping[str, Any] | Sequence[str] | None, *, source: str
) -> pd.DataFrame:
    """Check an in-memory manifest against a schema (see :func:`read_manifest` for the schema format).

    Args:
        df: The manifest; row numbers in messages are positions (0-based).
        required: Column names or ``{name: type}``.
        source: What to call the manifest in messages (usually its path).

    Returns:
        ``df`` itself, with typed columns given as text (e.g. ``"1"`` in a CSV column that also holds text)
        converted in place to int64/float64/bool.

    Raises:
        MissingColumnError: A required column is absent.
        InvalidValueError: Wrong dtype or empty values in a required column.
    """
    schema = _normalise_required(required)
    found = ", ".join(map(str, df.columns)) or "no columns"
    missing = [c for c in schema if c not in df.columns]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        names = ", ".join(repr(c) for c in missing)
        raise MissingColumnError(f"manifest {source}: missing required column{plural} {names} (found: {found})")
    for col, typ in schema.items():
        checked = _check_column(df[col], col, typ, source)
        if checked is not df[col]:
            df[col] = checked
    return df


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_LISTED_ROWS])
    more = f" and {len(rows) - _MAX_LISTED_ROWS} more" if len(rows) > _MAX_LISTED_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _check_column(series: pd.Series, col: str, typ: str, source: str) -> pd.Series:
    """Validate one required column; returns it, with numeric/bool text converted (a CSV column mixing "1" and
    "maybe" is read as text: "1" is a valid int, "maybe" is reported)."""
    values = series.to_numpy(dtype=object)
    missing = np.fromiter((_is_missing(v) for v in values), dtype=bool, count=len(values))
    if typ == "str":
        blank = np.fromiter((isinstance(v, str) and not v.strip() for v in values), dtype=bool, count=len(values))
        missing |= blank
    if missing.any():
        rows = np.flatnonzero(missing)
        raise InvalidValueError(f"manifest {source}: column {col!r} has empty values at {_rows_text(rows)}")
    if typ in ("any", "str"):
        if typ == "str":
            _raise_bad(series, values, [not isinstance(v, str) for v in values], col, typ, source)
        return series
    if typ == "bool":
        converted = [_BOOL_TEXT.get(v.strip().lower(), v) if isinstance(v, str) else v for v in values]
        _raise_bad(series, values, [not isinstance(v, bool | np.bool_) for v in converted], col, typ, source)
        return pd.Series(np.asarray(converted, dtype=bool), index=series.index, name=series.name)
    numbers = [_to_number(v) for v in values]
    if typ == "int":
        bad = [n is None or not float(n).is_integer() for n in numbers]
        _raise_bad(series, values, bad, col, typ, source)
        return pd.Series(np.asarray([int(n) for n in numbers], dtype=np.int64), index=series.index, name=series.name)
    _raise_bad(series, values, [n is None for n in numbers], col, typ, source)
    return pd.Series(np.asarray(numbers, dtype=np.float64), index=series.index, name=series.name)


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _to_number(value: Any) -> float | int | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    return None


def _raise_bad(series: pd.Series, values: np.ndarray, bad: list[bool], col: str, typ: str, source: str) -> None:
    mask = np.asarray(bad, dtype=bool)
    if mask.any():
        rows = np.flatnonzero(mask)
        first = values[rows[0]]
        raise InvalidValueError(
            f"manifest {source}: column {col!r} (dtype {series.dtype}) expected {typ}, "
            f"got {type(first).__name__} {first!r} at {_rows_text(rows)}"
        )


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return False
