"""Data plumbing for paired pretraining: a collate for mixed samples and a LightningDataModule base."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, IterableDataset, Sampler

from vlp_core.data.collate import collate_batch
from vlp_core.training.samplers import EpochIndexSampler, EpochSeededSampler, MultiSourceSampler

__all__ = ["PairedDataModule", "ResumableDataLoader", "collate_paired"]


def collate_paired(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Alias of :func:`vlp_core.data.collate_batch` (nested dicts, ragged tensors with masks, text lists)."""
    return collate_batch(samples)


class ResumableDataLoader(DataLoader):
    """A DataLoader that resumes mid-epoch exactly: Lightning saves its ``state_dict`` in checkpoints.

    Its state is the number of batches *trained on* in the current epoch — read from the trainer's batch progress
    when ``progress`` is set (the loader itself is one batch ahead: Lightning prefetches), else the batches handed
    out. After ``load_state_dict`` the next iteration of the same epoch starts after them. With vlp's samplers (whose
    order depends only on seed and epoch) the skipped samples are never loaded (``skip_once``); with any other
    sampler the skipped batches are drawn and discarded.

    Every iteration draws the workers' base seed from the loader's own generator, re-seeded from ``(seed, epoch)``:
    a plain DataLoader draws it from the *global* torch RNG when its iterator is created, which shifts every later
    dropout mask of a run resumed mid-epoch (its iterator is created at a different point of the RNG stream).
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        if kwargs.get("generator") is None:
            kwargs["generator"] = torch.Generator()
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self._yielded, self._resume = 0, None
        self.progress: Any = None  # callable -> batches trained on in this epoch (set by PairedDataModule)

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self) -> Any:
        skip = 0
        if self._resume is not None and self._resume["epoch"] == self._epoch():
            skip = int(self._resume["batches"])
        self._resume = None
        self._yielded = skip
        self.generator.manual_seed(self.seed * 1_000_003 + self._epoch())
        discard = 0
        if skip and hasattr(self.sampler, "skip_once") and self.batch_size is not None:
            self.sampler.skip_once(skip * self.batch_size)
        else:
            discard = skip
        for batch in super().__iter__():
            if discard:
                discard -= 1
                continue
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        done = self.progress() if self.progress is not None else self._yielded
        return {"epoch": self._epoch(), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class PairedDataModule(L.LightningDataModule):
    """Base for paired datasets: subclasses build ``self.train_set`` / ``val_set`` / ``test_set`` in ``setup``.

    Training batches use ``drop_last=True`` because the distributed contrastive gather needs equal batch sizes
    on every rank; the training order depends only on ``(seed, epoch)`` and is sharded across ranks by the sampler
    itself (:class:`~vlp_core.training.EpochSeededSampler`). Nothing is downloaded in ``prepare_data``.

    Args:
        batch_size: per-device batch size.
        num_workers: data-loading worker processes.
        seed: shuffling seed (order depends only on seed and epoch).
        train_set / val_set / test_set: datasets to use directly (handy in scripts and tests). ``train_set`` may be
            a list of datasets (sources with different fields/modalities): every training batch then comes from one
            source, the same on every rank (:class:`~vlp_core.training.MultiSourceSampler`), and loss terms whose
            fields a source lacks should be ``optional``. Under DDP such a model may leave a tower unused in a step:
            use ``strategy="ddp_find_unused_parameters_true"``.
        source_weights: sampling weights of the training sources (``None`` = round robin).

    A :class:`~vlp_core.data.shards.ShardDataset` (sharded streaming from a folder or object storage) is served by
    a :class:`~vlp_core.data.shards.ShardLoader` instead: litdata shuffles (seeded), splits by rank and worker and
    drops the tail so that every rank gets the same number of full batches, and its position is stored in
    Lightning checkpoints (exact mid-epoch resume). Subclasses just assign ``ShardDataset`` objects in ``setup``.

    Subclasses whose datasets accept ``ds[(epoch, i)]`` (augmentation drawn from ``(seed, epoch, i)`` alone) set
    ``epoch_index = True`` to train with :class:`~vlp_core.training.EpochIndexSampler`.
    """

    epoch_index: bool = False

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        train_set: Dataset | list[Dataset] | None = None,
        val_set: Dataset | None = None,
        test_set: Dataset | None = None,
        source_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.source_weights = source_weights

    def collate(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_batch(samples)

    def _loader(self, dataset: Dataset | list[Dataset] | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {'training' if train else 'evaluation'} dataset")
        if isinstance(dataset, IterableDataset):
            from vlp_core.data.shards import ShardDataset, ShardLoader

            if not isinstance(dataset, ShardDataset):
                raise TypeError(f"{type(dataset).__name__}: the only iterable datasets served here are ShardDatasets")
            return ShardLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=train,
                               collate_fn=self.collate)  # fmt: skip
        sampler: Sampler | None = None
        if isinstance(dataset, (list, tuple)):
            if not train:
                raise ValueError("only the training set may be a list of sources")
            sizes = [len(d) for d in dataset]  # type: ignore[arg-type]
            dataset = ConcatDataset(dataset)
            sampler = MultiSourceSampler(sizes, self.batch_size, self.source_weights, seed=self.seed,
                                         with_epoch=self.epoch_index)  # fmt: skip
        n = len(dataset)  # type: ignore[arg-type]
        if train and n < self.batch_size:
            raise ValueError(f"training set has {n} samples, fewer than one batch of {self.batch_size}")
        if train and sampler is None:
            sampler = (EpochIndexSampler if self.epoch_index else EpochSeededSampler)(n, self.seed)
        extra: dict[str, Any] = {"seed": self.seed} if train else {}
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            **extra,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collate,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, True)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and hasattr(loader, "progress"):  # ResumableDataLoader, ShardLoader
            # Batches whose optimisation step has run in this epoch (a checkpoint saved in on_train_batch_end
            # includes the current batch; the loader has already prefetched the next one).
            loader.progress = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def val_dataloader(self) -> DataLoader | list:
        # No validation set -> an empty list, which Lightning treats as "skip validation".
        return [] if self.val_set is None else self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
