"""Locate the real sample data: ``$VLP_SAMPLE_DATA``, the copy vendored in the repository (``tests/data``), or
``../shared/data`` next to the project root."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sample_data_dir", "sample_data_root", "ENV_VAR"]

ENV_VAR = "VLP_SAMPLE_DATA"
#: File that marks a ``tests/data`` folder as the vendored sample data (its provenance and licence table).
VENDORED_MARKER = "README.md"


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        # An explicit override is authoritative: never fall back to a guessed location behind the user's back.
        return [Path(env).expanduser()]
    out: list[Path] = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            # The vendored copy (a fresh clone has it) wins over the shared folder beside the checkout.
            for cand in (parent / "tests" / "data", parent / "shared" / "data"):
                if cand not in out:
                    out.append(cand)
    return out


def sample_data_root() -> Path | None:
    """The sample-data folder, or None when absent.

    Search order: ``$VLP_SAMPLE_DATA`` if set (only that); otherwise, walking up from the cwd and then from this
    file's folder, a vendored ``tests/data`` folder (with its ``README.md`` provenance table) or a ``shared/data``
    folder, whichever is met first (so a fresh clone uses its own copy, found from anywhere inside the
    repository, also for an editable install).

    Returns:
        Absolute path of the folder, or None.
    """
    explicit = bool(os.environ.get(ENV_VAR))
    for cand in _candidates():
        # A folder named tests/data counts only with its provenance table (other projects' test data do not).
        vendored = cand.parent.name == "tests" and not explicit
        if cand.is_dir() and (not vendored or (cand / VENDORED_MARKER).is_file()):
            return cand.resolve()
    return None


def sample_data_dir(*parts: str) -> Path | None:
    """Path to a sample-data file or folder, or None when the data (or that entry) is absent.

    Args:
        *parts: Path components below the sample-data root, e.g. ``("ecg", "ptbdb", "s0010_re.hea")``.

    Returns:
        The existing path, or None.
    """
    root = sample_data_root()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None
