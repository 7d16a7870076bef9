"""Data plumbing for paired pretraining: a collate for mixed samples and a LightningDataModule base."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochSeededSampler", "PairedDataModule", "collate_paired"]


def collate_paired(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate dict samples.

    Tensors of equal shape are stacked; 1-D tensors of different lengths (token ids, variable-length signals) are
    right-padded with 0 and get a ``"<key>_mask"`` ``[B, L]`` bool entry; strings become ``list[str]``; numbers
    become a tensor; anything else a list.

    Raises:
        KeyError: if samples do not share the same keys (naming the first offending sample).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = list(samples[0])
    for i, s in enumerate(samples):
        if set(s) != set(keys):
            raise KeyError(f"sample {i} has keys {sorted(s)}, expected {sorted(keys)}")
    out: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, Tensor):
            shapes = {v.shape for v in values}
            if len(shapes) == 1:
                out[key] = torch.stack(values)
            elif all(v.ndim == 1 for v in values):
                length = max(v.shape[0] for v in values)
                padded = first.new_zeros(len(values), length)
                mask = torch.zeros(len(values), length, dtype=torch.bool)
                for i, v in enumerate(values):
                    padded[i, : v.shape[0]] = v
                    mask[i, : v.shape[0]] = True
                out[key], out[f"{key}_mask"] = padded, mask
            else:
                raise ValueError(f"cannot collate {key!r}: shapes {sorted(map(tuple, shapes))} differ beyond 1-D")
        elif isinstance(first, str):
            out[key] = list(values)
        elif isinstance(first, (bool, int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = list(values)
    return out


class EpochSeededSampler(Sampler[int]):
    """Random permutation determined by ``(seed, epoch)`` only, so a resumed run sees the same order.

    Lightning calls ``set_epoch`` on samplers that have it (and swaps in a ``DistributedSampler`` under DDP,
    which follows the same rule).
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class PairedDataModule(L.LightningDataModule):
    """Base for paired datasets: subclasses build ``self.train_set`` / ``val_set`` / ``test_set`` in ``setup``.

    Training batches use ``drop_last=True`` because the distributed contrastive gather needs equal batch sizes
    on every rank. Nothing is downloaded in ``prepare_data``.

    Args:
        batch_size: per-device batch size.
        num_workers: data-loading worker processes.
        seed: shuffling seed (order depends only on seed and epoch).
        train_set / val_set / test_set: datasets to use directly (handy in scripts and tests).
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        test_set: Dataset | None = None,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_paired(samples)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {'training' if train else 'evaluation'} dataset")
        n = len(dataset)  # type: ignore[arg-type]
        if train and n < self.batch_size:
            raise ValueError(f"training set has {n} samples, fewer than one batch of {self.batch_size}")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(n, self.seed) if train else None,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | list:
        # No validation set -> an empty list, which Lightning treats as "skip validation".
        return [] if self.val_set is None else self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
