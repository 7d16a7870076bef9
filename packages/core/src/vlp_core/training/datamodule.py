"""Data plumbing for paired pretraining: a collate for mixed samples and a LightningDataModule base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vlp_core.data.collate import collate_batch
from vlp_core.training.samplers import EpochIndexSampler, EpochSeededSampler

__all__ = ["PairedDataModule", "collate_paired"]


def collate_paired(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Alias of :func:`vlp_core.data.collate_batch` (nested dicts, ragged tensors with masks, text lists)."""
    return collate_batch(samples)


class PairedDataModule(L.LightningDataModule):
    """Base for paired datasets: subclasses build ``self.train_set`` / ``val_set`` / ``test_set`` in ``setup``.

    Training batches use ``drop_last=True`` because the distributed contrastive gather needs equal batch sizes
    on every rank; the training order depends only on ``(seed, epoch)`` and is sharded across ranks by the sampler
    itself (:class:`~vlp_core.training.EpochSeededSampler`). Nothing is downloaded in ``prepare_data``.

    Args:
        batch_size: per-device batch size.
        num_workers: data-loading worker processes.
        seed: shuffling seed (order depends only on seed and epoch).
        train_set / val_set / test_set: datasets to use directly (handy in scripts and tests).

    Subclasses whose datasets accept ``ds[(epoch, i)]`` (augmentation drawn from ``(seed, epoch, i)`` alone) set
    ``epoch_index = True`` to train with :class:`~vlp_core.training.EpochIndexSampler`.
    """

    epoch_index: bool = False

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

    def collate(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_batch(samples)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {'training' if train else 'evaluation'} dataset")
        n = len(dataset)  # type: ignore[arg-type]
        if train and n < self.batch_size:
            raise ValueError(f"training set has {n} samples, fewer than one batch of {self.batch_size}")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=(EpochIndexSampler if self.epoch_index else EpochSeededSampler)(n, self.seed) if train else None,
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
