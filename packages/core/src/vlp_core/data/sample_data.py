"""Locate the shared real sample data (``../shared/data`` next to the project root, or ``$VLP_SAMPLE_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sample_data_dir", "sample_data_root", "ENV_VAR"]

ENV_VAR = "VLP_SAMPLE_DATA"


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        # An explicit override is authoritative: never fall back to a guessed location behind the user's back.
        return [Path(env).expanduser()]
    out: list[Path] = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            cand = parent / "shared" / "data"
            if cand not in out:
                out.append(cand)
    return out


def sample_data_root() -> Path | None:
    """The sample-data folder, or None when absent.

    Search order: ``$VLP_SAMPLE_DATA`` if set (only that); otherwise a ``shared/data`` folder in the cwd or any
    parent, then in this file's folder or any parent (so ``../shared/data`` relative to the repository root is
    found from anywhere inside the repository, also for an editable install).

    Returns:
        Absolute path of the folder, or None.
    """
    for cand in _candidates():
        if cand.is_dir():
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
