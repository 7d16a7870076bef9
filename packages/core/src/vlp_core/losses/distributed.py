"""Collectives used by the contrastive losses.

The losses own their gather (instead of ``LightningModule.all_gather``) so one implementation runs under torchrun,
Lightning DDP and FSDP. Rank and world size are read from :mod:`torch.distributed` when it is initialised; tests
inject a fake gather to emulate several ranks in one process.

Gradient bookkeeping: the autograd all-gather's backward sums the incoming gradients over ranks (a reduce-scatter),
which together with DDP's gradient *averaging* yields exactly the gradient of the global-batch loss, provided each
rank's loss is its share of the global mean (``world * local_sum / global_count``, see :func:`global_mean`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GatherFn", "dist_info", "gather_features", "gather_variable", "global_max", "global_mean", "pad_dims_to"]

GatherFn = Callable[[Tensor], list[Tensor]]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_with_grad(x: Tensor) -> list[Tensor]:
    import torch.distributed.nn.functional as dist_fn

    return list(dist_fn.all_gather(x))


def _gather_no_grad(x: Tensor) -> list[Tensor]:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return out


def _parts(x: Tensor, rank: int, with_grad: bool, gather_fn: GatherFn | None) -> list[Tensor]:
    if gather_fn is not None:
        return list(gather_fn(x))
    if with_grad:
        return _gather_with_grad(x)
    parts = _gather_no_grad(x)
    parts[rank] = x  # the local slice keeps its graph, so this rank still receives its own gradient
    return parts


def gather_features(
    x: Tensor, rank: int, world_size: int, with_grad: bool = True, gather_fn: GatherFn | None = None
) -> Tensor:
    """Concatenate ``x`` ``[n, ...]`` from all ranks into ``[world_size * n, ...]``.

    Without gradient through the gather, the local slice is put back so this rank still receives its own gradient
    (open_clip's behaviour). Every rank must pass the same ``n`` (use ``drop_last=True`` in the data loader, or
    :func:`gather_variable` for ragged data).

    Args:
        x: local features ``[n, ...]``.
        rank: this process's rank.
        world_size: number of processes.
        with_grad: back-propagate through the gather.
        gather_fn: override of the collective (tests); receives ``x``, returns the per-rank list.
    """
    if world_size == 1:
        return x
    parts = _parts(x, rank, with_grad, gather_fn)
    sizes = {p.shape[0] for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"all ranks must have the same local batch size for the contrastive gather, got {sizes}")
    return torch.cat(parts, dim=0)


def global_max(values: list[int], world_size: int, device: torch.device | None = None) -> list[int]:
    """Element-wise maximum of small integer lists over ranks (one all-reduce)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def gather_variable(
    x: Tensor, rank: int, world_size: int, with_grad: bool = True, gather_fn: GatherFn | None = None
) -> tuple[Tensor, list[int]]:
    """All-gather tensors whose first dimension differs between ranks: pad to the largest, gather, unpad.

    Args:
        x: local tensor ``[n_r, ...]`` (trailing dimensions equal on every rank).
        rank / world_size: this process and the group size.
        with_grad: back-propagate through the gather (the padding rows get no gradient).
        gather_fn: test override; called on the *unpadded* ``x`` and must return each rank's tensor.

    Returns:
        ``(concatenated [Σ n_r, ...], sizes [n_0, ..., n_{R-1}])``.
    """
    if world_size == 1:
        return x, [x.shape[0]]
    if gather_fn is not None:
        parts = list(gather_fn(x))
        return torch.cat(parts, 0), [p.shape[0] for p in parts]
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes_t = [torch.empty_like(n) for _ in range(world_size)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s) for s in sizes_t]
    pad = max(sizes) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], 0) if pad else x
    parts = _parts(padded, rank, with_grad, None)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], 0), sizes


def pad_dims_to(x: Tensor, shape: tuple[int, ...], value: float | bool = 0) -> Tensor:
    """Right-pad every dimension after the first of ``x`` to ``shape`` (``shape`` excludes dim 0)."""
    pads: list[int] = []
    for have, want in reversed(list(zip(x.shape[1:], shape))):
        if want < have:
            raise ValueError(f"cannot pad {tuple(x.shape)} down to {shape}")
        pads += [0, want - have]
    if not any(pads):
        return x
    if x.dtype == torch.bool:
        return F.pad(x.to(torch.uint8), pads, value=int(value)).bool()
    return F.pad(x, pads, value=value)


def global_mean(
    local_sum: Tensor, local_count: Tensor, rank: int, world_size: int, gather_fn: GatherFn | None = None
) -> Tensor:
    """This rank's share of a global mean, ``world * local_sum / Σ_r count_r``.

    Averaged over ranks (as DDP averages gradients) it equals ``Σ_r sum_r / Σ_r count_r``, the single-process mean
    over the concatenated batch, even when ranks hold different numbers of terms.
    """
    count = local_count.detach().to(device=local_sum.device, dtype=local_sum.dtype).reshape(1)
    if world_size == 1:
        return local_sum / count.clamp_min(1.0).squeeze()
    if gather_fn is not None:
        total = torch.cat(list(gather_fn(count))).sum()
    else:
        total = count.clone()
        dist.all_reduce(total)
        total = total.squeeze()
    return local_sum * world_size / total.clamp_min(1.0)
