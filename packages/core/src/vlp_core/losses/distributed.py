"""Collectives used by the contrastive losses.

The losses own their gather (instead of ``LightningModule.all_gather``) so one implementation runs under torchrun,
Lightning DDP and FSDP. Rank and world size are read from :mod:`torch.distributed` when it is initialised; tests
inject a fake gather to emulate several ranks in one process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GatherFn", "dist_info", "gather_features"]

GatherFn = Callable[[Tensor], list[Tensor]]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_with_grad(x: Tensor) -> list[Tensor]:
    # Autograd-aware all-gather: its backward sums the incoming gradients over ranks (a reduce-scatter), which
    # together with DDP's gradient averaging yields exactly the gradient of the global-batch loss.
    import torch.distributed.nn.functional as dist_fn

    return list(dist_fn.all_gather(x))


def _gather_no_grad(x: Tensor) -> list[Tensor]:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return out


def gather_features(
    x: Tensor, rank: int, world_size: int, with_grad: bool = True, gather_fn: GatherFn | None = None
) -> Tensor:
    """Concatenate ``x`` ``[n, ...]`` from all ranks into ``[world_size * n, ...]``.

    Without gradient through the gather, the local slice is put back so this rank still receives its own gradient
    (open_clip's behaviour). Every rank must pass the same ``n`` (use ``drop_last=True`` in the data loader).

    Args:
        x: local features ``[n, ...]``.
        rank: this process's rank.
        world_size: number of processes.
        with_grad: back-propagate through the gather.
        gather_fn: override of the collective (tests); receives ``x``, returns the per-rank list.
    """
    if world_size == 1:
        return x
    if gather_fn is not None:
        parts = list(gather_fn(x))
    elif with_grad:
        parts = _gather_with_grad(x)
    else:
        parts = _gather_no_grad(x)
        parts[rank] = x
    sizes = {p.shape[0] for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"all ranks must have the same local batch size for the contrastive gather, got {sizes}")
    return torch.cat(parts, dim=0)
