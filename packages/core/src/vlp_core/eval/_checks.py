"""Input validation shared by the evaluation functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_tensor(x: Any, name: str, *, dtype: torch.dtype | None = None) -> Tensor:
    """Convert arrays/DataFrames/lists to a tensor (no copy when already a tensor of the right dtype)."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
        # pandas may hand out read-only views; torch warns on those, so copy them.
        t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
    return t.to(dtype) if dtype is not None else t


def check_embeddings(x: Any, name: str, *, ndim: int = 2) -> Tensor:
    """Validate an embedding matrix: floating, ``ndim``-D, non-empty and finite.

    Args:
        x: Embeddings, shape [N, D] for ``ndim=2``.
        name: Name used in the error message.
        ndim: Expected number of dimensions.

    Returns:
        The embeddings as a floating tensor (float32 if they were integer/half on CPU).

    Raises:
        ValueError: Wrong shape, empty, or NaN/inf values (the message gives the offending rows).
    """
    t = as_tensor(x, name)
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: empty tensor of shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    check_finite(t, name)
    return t


def check_finite(t: Tensor, name: str) -> None:
    """Raise ValueError naming the first non-finite rows of ``t``."""
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten() if t.ndim > 0 else torch.tensor([0])
        has_nan = bool(torch.isnan(t).any())
        kind = "NaN" if has_nan else "inf"
        shown = rows[:5].tolist()
        more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
        raise ValueError(f"{name} contains {kind} values in rows {shown}{more}; refusing to compute metrics")
