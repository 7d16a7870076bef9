"""Samplers: order depends only on (seed, epoch); ranks get disjoint equal shards; multi-source batches."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from vlp_core.training import EpochIndexSampler, EpochSeededSampler, MultiSourceSampler


def test_epoch_seeded_sampler_shards_disjointly_and_changes_with_epoch() -> None:
    shards = [EpochSeededSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    assert isinstance(shards[0], DistributedSampler)  # Lightning keeps it instead of wrapping it
    items = [list(s) for s in shards]
    assert all(len(x) == 3 == len(s) for x, s in zip(items, shards))
    flat = [i for x in items for i in x]
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    first = list(shards[0])
    for s in shards:
        s.set_epoch(1)
    assert list(shards[0]) != first
    again = EpochSeededSampler(10, seed=3, rank=0, world_size=3)
    again.set_epoch(1)
    assert list(again) == list(shards[0])  # a fresh (resumed) process sees the same order


def test_epoch_index_sampler_yields_epoch_and_index() -> None:
    s = EpochIndexSampler(6, seed=0, rank=0, world_size=1)
    s.set_epoch(4)
    out = list(s)
    assert {e for e, _ in out} == {4} and sorted(i for _, i in out) == list(range(6))


class _Tagged(Dataset):
    def __init__(self, tag: int, n: int) -> None:
        self.tag, self.n = tag, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"source": self.tag, "i": i}


@pytest.mark.parametrize("weights", [None, [3.0, 1.0]])
def test_multi_source_batches_are_single_source_and_same_on_every_rank(weights) -> None:
    data = ConcatDataset([_Tagged(0, 40), _Tagged(1, 12)])
    per_rank = []
    for rank in range(2):
        sampler = MultiSourceSampler([40, 12], batch_size=4, weights=weights, seed=5, rank=rank, world_size=2)
        sampler.set_epoch(2)
        loader = DataLoader(data, batch_size=4, sampler=sampler, drop_last=True)
        per_rank.append([(b["source"].tolist(), b["i"].tolist()) for b in loader])
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    for (src0, idx0), (src1, idx1) in zip(*per_rank):
        assert len(set(src0)) == 1 and src0 == src1  # one source per step, the same on both ranks
        assert not set(idx0) & set(idx1)  # disjoint slices
    if weights is not None:
        counts = Counter(b[0][0] for b in per_rank[0])
        assert counts[0] > counts[1]


def test_multi_source_schedule_is_reproducible_and_epoch_dependent() -> None:
    def run(epoch: int) -> list[int]:
        s = MultiSourceSampler([30, 30], batch_size=3, weights=[1, 1], seed=1, rank=0, world_size=1)
        s.set_epoch(epoch)
        return list(s)

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_multi_source_validates_weights() -> None:
    with pytest.raises(ValueError, match="weight"):
        MultiSourceSampler([4, 4], batch_size=2, weights=[1.0])
