"""Shared fixture of the ragged multi-positive tests (imported by test files and the 2-process worker)."""

from __future__ import annotations

import torch

# Global batch: 5 anchors, 9 candidates; rank 0 holds anchors 0-2 (+ their 6 candidates), rank 1 anchors 3-4 (+ 3).
OWNER = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
IDS = torch.tensor([10, 11, 12, 13, 10, 14, 15, 12, 16])  # text 10 on rank 0 twice, text 12 on both ranks
WEIGHTS = torch.tensor([1.0, 0.5, 1.0, 2.0, 1.0, 1.0, 1.0, 0.25, 1.0], dtype=torch.float64)
A_SPLIT, B_SPLIT = [3, 2], [6, 3]


def data(dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return torch.randn(5, dim, generator=g, dtype=torch.float64), torch.randn(9, dim, generator=g, dtype=torch.float64)


def rank_slices(rank: int) -> tuple[slice, slice]:
    a0, b0 = sum(A_SPLIT[:rank]), sum(B_SPLIT[:rank])
    return slice(a0, a0 + A_SPLIT[rank]), slice(b0, b0 + B_SPLIT[rank])


def local_owner(rank: int) -> torch.Tensor:
    sa, sb = rank_slices(rank)
    return OWNER[sb] - sa.start
