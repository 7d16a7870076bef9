"""Deterministic, distributed-aware samplers: the order depends only on ``(seed, epoch)``, never on the process.

Both samplers shard the epoch's order across ranks themselves (rank ``r`` takes every ``world``-th block), so they
derive from :class:`~torch.utils.data.DistributedSampler` and Lightning keeps them instead of wrapping them (a
wrapped sampler would never see ``set_epoch`` and repeat epoch 0's order forever).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from vlp_core.losses.distributed import dist_info

__all__ = ["EpochIndexSampler", "EpochSeededSampler", "MultiSourceSampler"]


class _ShardedSampler(DistributedSampler):
    """Base: rank/world read lazily (the process group may start after the sampler is built); ``set_epoch``."""

    def __init__(self, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        # DistributedSampler.__init__ needs an initialised process group and a dataset; neither is needed here.
        self.seed, self.epoch, self._skip = int(seed), 0, 0
        self._rank, self._world = rank, world_size

    @property
    def rank(self) -> int:  # type: ignore[override]
        return self._rank if self._rank is not None else dist_info()[0]

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return self._world if self._world is not None else dist_info()[1]

    @num_replicas.setter
    def num_replicas(self, value: int) -> None:
        self._world = value

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_once(self, n: int) -> None:
        """Leave out the first ``n`` items of the next iteration only (mid-epoch resume without loading them)."""
        self._skip = int(n)

    def _take_skip(self) -> int:
        n, self._skip = self._skip, 0
        return n

    def _generator(self, *keys: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, self.epoch, *keys)) & 0x7FFF_FFFF_FFFF_FFFF)


class EpochSeededSampler(_ShardedSampler):
    """Random permutation of ``range(n)`` determined by ``(seed, epoch)``; each rank takes an equal shard.

    Args:
        n: dataset length.
        seed: shuffling seed.
        rank / world_size: override the process group (tests); default: read from ``torch.distributed``.

    The permutation is truncated to a multiple of ``world_size`` so every rank yields the same number of items
    (contrastive gathers need equal batches); rank ``r`` takes positions ``r, r + world, ...``.
    """

    def __init__(self, n: int, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(seed, rank, world_size)
        if n < 1:
            raise ValueError(f"cannot sample from an empty dataset (n={n})")
        self.n = int(n)

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        world = self.num_replicas
        return order[: len(self) * world][self.rank :: world].tolist()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._order()[self._take_skip() :])

    def __len__(self) -> int:
        return self.n // self.num_replicas


class EpochIndexSampler(EpochSeededSampler):
    """Like :class:`EpochSeededSampler` but yields ``(epoch, index)`` tuples.

    A dataset that accepts ``ds[(epoch, i)]`` can then draw its augmentation from ``(seed, epoch, i)`` alone — also
    inside persistent DataLoader workers, whose copies of the dataset never see ``set_epoch``.
    """

    def __iter__(self) -> Iterator[Any]:
        return iter([(self.epoch, i) for i in self._order()[self._take_skip() :]])


class MultiSourceSampler(_ShardedSampler):
    """Batches drawn from several datasets (a ``ConcatDataset`` of sources), one source per step, same on all ranks.

    Every block of ``batch_size`` consecutive indices it yields on a rank comes from one source, so a DataLoader
    with the same ``batch_size`` and ``drop_last=True`` gives single-source batches; at step ``k`` every rank uses
    the same source (so every rank runs the same towers and loss terms) and a disjoint slice of it.

    Args:
        sizes: length of each source, in ``ConcatDataset`` order.
        batch_size: per-rank batch size (must equal the DataLoader's).
        weights: relative sampling weights per source; ``None`` = round robin over sources.
        steps_per_epoch: steps per epoch (default: the number of full global batches all sources hold together).
        seed: seed; the schedule and every source's order depend only on ``(seed, epoch)``.
        with_epoch: yield ``(epoch, index)`` tuples (see :class:`EpochIndexSampler`).
        rank / world_size: override the process group (tests).

    A source that runs out within an epoch is reshuffled (its next pass is another seeded permutation, the last
    incomplete global batch of the old pass is dropped), so weights above a source's share oversample it instead of
    stopping the epoch.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        weights: Sequence[float] | None = None,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        with_epoch: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed, rank, world_size)
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"every source needs at least one sample, got sizes {self.sizes}")
        if weights is not None and (len(weights) != len(self.sizes) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"need one non-negative weight per source with a positive sum, got {list(weights)}")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.batch_size, self._steps, self.with_epoch = int(batch_size), steps_per_epoch, with_epoch
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    @property
    def steps(self) -> int:
        if self._steps is not None:
            return int(self._steps)
        return max(1, sum(s // (self.batch_size * self.num_replicas) for s in self.sizes))

    def schedule(self) -> list[int]:
        """The source of every step of the current epoch (identical on every rank)."""
        n = len(self.sizes)
        if self.weights is None:
            start = self.epoch % n  # rotate so short epochs do not always favour source 0
            return [(start + k) % n for k in range(self.steps)]
        w = torch.tensor(self.weights, dtype=torch.float64)
        return torch.multinomial(w, self.steps, replacement=True, generator=self._generator(-1)).tolist()

    def __iter__(self) -> Iterator[Any]:
        world, rank, bs = self.num_replicas, self.rank, self.batch_size
        cursors = [0] * len(self.sizes)
        passes = [0] * len(self.sizes)
        orders: dict[int, list[int]] = {}
        out: list[Any] = []
        for src in self.schedule():
            need = bs * world
            if need > self.sizes[src]:
                raise ValueError(f"source {src} has {self.sizes[src]} samples, fewer than one global batch of {need}")
            if src not in orders or cursors[src] + need > len(orders[src]):
                # Start a new pass; the short remainder of the old one is dropped (drop_last per source), so a step
                # never mixes two passes and never repeats a sample across ranks.
                orders[src] = torch.randperm(self.sizes[src], generator=self._generator(src, passes[src])).tolist()
                cursors[src], passes[src] = 0, passes[src] + 1
            block = orders[src][cursors[src] : cursors[src] + need]
            cursors[src] += need
            mine = [self.offsets[src] + i for i in block[rank * bs : (rank + 1) * bs]]
            out.extend([(self.epoch, i) for i in mine] if self.with_epoch else mine)
        return iter(out[self._take_skip() :])

    def __len__(self) -> int:
        return self.steps * self.batch_size
