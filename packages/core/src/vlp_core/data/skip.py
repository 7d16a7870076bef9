"""Skip-bad-records policy and identifier redaction for logs.

``SkipPolicy(skip_bad=False)`` (the default) re-raises every error: a bad record stops the run, loudly.
With ``skip_bad=True`` the error is counted by exception type, a warning naming the key and the problem is logged
(the first ``log_limit`` times), and the key is remembered for :meth:`SkipPolicy.report`.

Keys are logged verbatim, so callers must pass record keys that are not patient identifiers (a file name without
the patient id, a row number, or :func:`redact` of the id).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SkipPolicy", "SkipGuard", "redact"]

logger = logging.getLogger("vlp_core.data")

# Per-process fallback salt: hashes are consistent within a run (and in forked DataLoader workers) but not across
# runs. Set VLP_REDACT_SALT for run-to-run (and spawned-worker) consistency.
_PROCESS_SALT = secrets.token_hex(16)


def redact(identifier: Any, salt: str | None = None, length: int = 12) -> str:
    """Short salted hash of an identifier, safe to log.

    Args:
        identifier: Patient/study id (hashed as ``str(identifier)``).
        salt: Secret salt; default ``$VLP_REDACT_SALT``, else a random per-process salt. An unsalted hash of a
            short id (e.g. a medical record number) is trivially reversible by enumeration, hence the salt.
        length: Number of hex characters (4..64).

    Returns:
        ``"id-"`` followed by ``length`` hex characters.
    """
    if not 4 <= length <= 64:
        raise ValueError(f"length must be in [4, 64], got {length}")
    salt = salt if salt is not None else os.environ.get("VLP_REDACT_SALT", _PROCESS_SALT)
    digest = hashlib.blake2b(str(identifier).encode(), key=salt.encode()[:64], digest_size=32).hexdigest()
    return "id-" + digest[:length]


@dataclass
class SkipGuard:
    """Handle yielded by :meth:`SkipPolicy.guard`; ``skipped`` is True after the block if its error was skipped."""

    key: str
    skipped: bool = False
    error: BaseException | None = None


@dataclass
class SkipPolicy:
    """What to do with a bad record: raise (default) or skip, count and log.

    Args:
        skip_bad: False re-raises every error; True skips it (counted, logged, key kept).
        catch: Exception types the policy may skip; anything else always propagates (so e.g. ``catch=(BadInputError,
            OSError)`` keeps programming errors fatal even when skipping). ``KeyboardInterrupt`` is never caught.
        log_limit: Log a warning for the first ``log_limit`` skips, then one notice that further skips are silent
            (they are still counted). None = log all.
        name: Label used in the summary and logs (e.g. the dataset name).

    Counts are per process: with multi-process data loading each worker has its own copy.
    """

    skip_bad: bool = False
    catch: tuple[type[BaseException], ...] = (Exception,)
    log_limit: int | None = 20
    name: str = "records"
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)
    _keys: list[str] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def handle(self, key: Any, exc: BaseException) -> None:
        """Record a failure of ``key``: re-raise it, or (``skip_bad=True``) count and log it and return None.

        Args:
            key: Record key shown in logs and the report (must not be a patient identifier).
            exc: The exception raised while processing the record.

        Raises:
            The given ``exc`` when ``skip_bad`` is False or ``exc`` is not an instance of ``catch``.
        """
        if not self.skip_bad or not isinstance(exc, self.catch):
            raise exc
        key = str(key)
        with self._lock:
            self._counts[type(exc).__name__] += 1
            self._keys.append(key)
            n = len(self._keys)
        if self.log_limit is None or n <= self.log_limit:
            logger.warning("skipping bad %s key %s: %s: %s", self.name, key, type(exc).__name__, exc)
        elif n == self.log_limit + 1:
            logger.warning(
                "more than %d bad %s skipped; further skips are counted but not logged", self.log_limit, self.name
            )

    @contextmanager
    def guard(self, key: Any) -> Iterator[SkipGuard]:
        """Context manager: errors inside the block go through :meth:`handle`.

        Example::

            with policy.guard(row.path) as g:
                sample = load(row.path)
            if g.skipped:
                continue

        Args:
            key: Record key (see :meth:`handle`).

        Yields:
            A :class:`SkipGuard` whose ``skipped``/``error`` are set when the block's error was skipped.
        """
        handle = SkipGuard(key=str(key))
        try:
            yield handle
        except self.catch as exc:
            self.handle(key, exc)
            handle.skipped = True
            handle.error = exc

    @property
    def n_skipped(self) -> int:
        """Number of skipped records so far."""
        return len(self._keys)

    def report(self) -> dict[str, Any]:
        """Skip statistics.

        Returns:
            ``{"skip_bad": bool, "n_skipped": int, "by_type": {exception type name: count}, "keys": [key, ...]}``
            (keys in the order they were skipped).
        """
        with self._lock:
            return {
                "skip_bad": self.skip_bad,
                "n_skipped": len(self._keys),
                "by_type": dict(self._counts.most_common()),
                "keys": list(self._keys),
            }

    def summary(self) -> str:
        """One line, e.g. ``"skipped 3 bad records (BadInputError: 2, OSError: 1)"``."""
        rep = self.report()
        if rep["n_skipped"] == 0:
            return f"no bad {self.name} skipped"
        parts = ", ".join(f"{k}: {v}" for k, v in rep["by_type"].items())
        return f"skipped {rep['n_skipped']} bad {self.name} ({parts})"

    def reset(self) -> None:
        """Forget all counts and keys."""
        with self._lock:
            self._counts.clear()
            self._keys.clear()
