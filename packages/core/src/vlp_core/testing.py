"""Pytest helpers (import only from tests)."""

from __future__ import annotations

from pathlib import Path

from vlp_core.data.sample_data import ENV_VAR, sample_data_dir, sample_data_root

__all__ = ["require_sample_data"]


def require_sample_data(*parts: str) -> Path:
    """Return a sample-data path or skip the calling test with a clear reason.

    Args:
        *parts: Path components below the sample-data root, e.g. ``("cxr", "nih_00000001_000.png")``.

    Returns:
        The existing path.
    """
    import pytest  # local import: pytest is a test-only dependency

    path = sample_data_dir(*parts)
    if path is not None:
        return path
    root = sample_data_root()
    what = "/".join(parts) or "the sample-data folder"
    if root is None:
        reason = (
            f"sample data not found ({what}): set ${ENV_VAR} or place the shared data folder at ../shared/data "
            "relative to the project root"
        )
    else:
        reason = f"sample data entry {what!r} not found under {root}"
    pytest.skip(reason)
