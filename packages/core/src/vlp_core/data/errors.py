"""Exception hierarchy for bad inputs across vlp.

Every error caused by the *data* (a malformed file, a missing column, an unreadable record) derives from
:class:`BadInputError`, itself a :class:`ValueError`, so callers can either catch the whole family
(``except BadInputError``) or keep treating it as an ordinary ``ValueError``. :class:`~vlp_core.data.SkipPolicy`
uses this split to tell data problems from programming errors.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "CorruptRecordError",
    "ManifestError",
    "MissingColumnError",
    "InvalidValueError",
    "UnsupportedFormatError",
]


class BadInputError(ValueError):
    """Base class: an input file or record is unusable. Messages name the file (and column/row when known)."""


class ManifestError(BadInputError):
    """A manifest (CSV/Parquet/JSONL index of records) cannot be read or fails its schema check."""


class MissingColumnError(ManifestError):
    """A required manifest column is absent."""


class InvalidValueError(ManifestError):
    """A required manifest column has the wrong dtype or empty values (the message names the row)."""


class UnsupportedFormatError(BadInputError):
    """A file has a suffix/format vlp does not know how to read."""


class CorruptRecordError(BadInputError):
    """A single record (signal, image, volume, text) is unreadable or inconsistent with its metadata."""
