"""Training helpers: an in-memory volume–report set (preprocessed once through the persistent cache) and the CLIP
fitting loop on Lightning (the trainer owns the loop, the Pretrainer the math)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = ["VolumeTextSet", "load_split", "fit_clip"]


class VolumeTextSet(torch.utils.data.Dataset):
    """Preprocessed volumes ``[N, 1, D, H, W]`` with reports and labels, held in memory.

    Augmentation (training only) depends on ``(seed, epoch, index)`` only: a random shift of up to ``shift``
    voxels per axis (``torch.roll`` would wrap around; we pad with air and crop instead) and Gaussian noise.

    Args:
        images: ``[N, 1, D, H, W]`` windowed volumes.
        texts: N reports.
        labels: ``[N, C]`` labels.
        augment: apply augmentation.
        shift: maximum shift (voxels).
        noise: noise standard deviation (window units).
        shuffle_pairs: pair each volume with another volume's report (the shuffled-pair control).
        sentence_prob: probability of replacing the report by one of its sentences (text augmentation that ties
            each finding sentence, positive or negated, to the volume; training only).
        sentences: also return every sentence of the report as ``"sentences"`` (``list[str]``), for the
            sentence-level multi-positive term of :func:`vlp_ct3d.models.build_ct_clip` (``sentence_weight``).
        seed: seed.
    """

    def __init__(
        self,
        images: Tensor,
        texts: Sequence[str],
        labels: Tensor,
        augment: bool = False,
        shift: int = 2,
        noise: float = 0.01,
        shuffle_pairs: bool = False,
        sentence_prob: float = 0.0,
        sentences: bool = False,
        seed: int = 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.texts = list(texts)
        if shuffle_pairs:
            perm = np.random.default_rng(seed + 7919).permutation(len(self.texts))
            self.texts = [self.texts[i] for i in perm]
        self.augment, self.shift, self.noise, self.seed = augment, shift, noise, seed
        self.sentence_prob = sentence_prob
        self.return_sentences = sentences
        self.sentences = [report_sentences(t) for t in self.texts]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.images[i]
        text = self.texts[i]
        if self.augment and self.sentence_prob > 0:
            r = random.Random(
                (self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(i)
            )  # no str hash: stable across runs
            if r.random() < self.sentence_prob and self.sentences[i]:
                text = r.choice(self.sentences[i])
        if self.augment:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(i))) & 0x7FFFFFFF)
            s = self.shift
            if s:
                pad = torch.nn.functional.pad(x, (s, s, s, s, s, s), value=float(x.min()))
                o = torch.randint(0, 2 * s + 1, (3,), generator=g).tolist()
                d, h, w = x.shape[1:]
                x = pad[:, o[0] : o[0] + d, o[1] : o[1] + h, o[2] : o[2] + w]
            if self.noise:
                x = x + self.noise * torch.randn(x.shape, generator=g)
        out = {"image": x, "text": text, "labels": self.labels[i]}
        if self.return_sentences:
            out["sentences"] = list(self.sentences[i]) or [self.texts[i]]
        return out

    def all_texts(self) -> list[str]:
        """Every text this set can return (reports and, with sentence sampling, their sentences)."""
        out = set(self.texts)
        if self.sentence_prob > 0 or self.return_sentences:
            out.update(s for sents in self.sentences for s in sents)
        return sorted(out)


def report_sentences(report: str) -> list[str]:
    """Sentences of a ``Findings: … Impression: …`` report (section headers removed)."""
    import re

    body = re.sub(r"\b(Findings|Impression):\s*", "", report)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", body) if len(s.strip()) > 3]


def load_split(
    frame: pd.DataFrame, preset: Any = "demo", cache_dir: str | Path | None = None, classes: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[Tensor, list[str], Tensor, Tensor]:  # fmt: skip
    """Preprocess every row (persistent cache) → ``images [N, 1, D, H, W]``, texts, labels ``[N, C]``, affines."""
    from tqdm.auto import tqdm

    from vlp_ct3d.ctrate import CTReportDataset
    from vlp_ct3d.transforms import build_transforms

    hu_mode = str(frame["hu_mode"].iloc[0]) if "hu_mode" in frame else "already_hu"
    ds = CTReportDataset(frame, build_transforms(preset, hu_mode=hu_mode), labels=classes, cache_dir=cache_dir)
    items = [ds[i] for i in tqdm(range(len(ds)), desc="preprocess", disable=not progress)]
    images = torch.stack([d["image"] for d in items])
    return (
        images,
        [d["text"] for d in items],
        torch.stack([d["labels"] for d in items]),
        torch.stack([d["image_affine"] for d in items]),
    )


def fit_clip(
    model: Any,
    train: VolumeTextSet,
    max_steps: int,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    num_workers: int = 0,
    precision: str | None = None,
) -> Any:
    """Fit a CLIP ``Pretrainer`` for ``max_steps`` optimiser steps on CPU/GPU with Lightning.

    ``precision``: Lightning's (``None`` = ``"32-true"``, ``"bf16-mixed"``, ...) or ``"auto"`` (bf16 mixed precision
    where the hardware has native bf16, else fp32; :func:`vlp_core.training.resolve_precision`).
    """
    import lightning as L

    from vlp_core.data import collate_batch
    from vlp_core.training import resolve_precision

    L.seed_everything(seed, workers=True, verbose=False)
    texts = train.all_texts()
    with torch.no_grad():  # fill the frozen text encoder's cache once
        for i in range(0, len(texts), 128):
            model.towers["text"](texts[i : i + 128])

    class _Epochs(L.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            train.epoch = trainer.current_epoch

    g = torch.Generator().manual_seed(seed)
    keys = ("image", "text", "sentences", "sentences_owner", "sentences_ids")
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True, generator=g,
                                         collate_fn=lambda b: {k: v for k, v in collate_batch(b).items() if k in keys},
                                         num_workers=num_workers)  # fmt: skip
    trainer = L.Trainer(accelerator="auto", devices=1, max_steps=max_steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[_Epochs()],
                        precision=resolve_precision(precision))  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    return model.eval()
