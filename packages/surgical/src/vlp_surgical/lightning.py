"""Lightning training of HecVL + PeskaVLP + OphCLIP: the trainer owns the loop (devices, DDP / multi-node,
precision, checkpoints), :class:`~vlp_surgical.training.HecVLObjective` the math.

The objective is exact under ``torch.distributed`` with ragged per-rank batches (tested against the single-process
objective), so ``strategy="ddp"`` on N devices trains on the same global batch of ``N × videos_per_batch`` whole
videos as one process would. :func:`vlp_surgical.training.pretrain` (the small single-process loop used by the demo)
stays for CPU work; both share the objective, batch builder and schedule.

Use ``strategy="ddp_find_unused_parameters_true"`` (the CLI's default for more than one device): a step whose
global batch has fewer than two videos, or an empty silent-clip bank, leaves a loss temperature unused.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlp_core.training import PairedDataModule
from vlp_surgical.models import HecVL
from vlp_surgical.training import HecVLObjective, VideoItem, _generators, build_batch, cosine_schedule

__all__ = ["HecVLModule", "VideoDataModule"]


class _Videos(Dataset):
    def __init__(self, items: list[VideoItem]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> VideoItem:
        return self.items[i]


class VideoDataModule(PairedDataModule):
    """Whole videos per batch (``batch_size`` = videos per device), collated by
    :func:`~vlp_surgical.training.build_batch`; seeded order sharded across ranks and exact mid-epoch resume from
    core's :class:`~vlp_core.training.PairedDataModule`.

    Args:
        items: training videos (with narration hierarchies), e.g. ``ProcedureCorpus(root, "train").items``.
        videos_per_batch: whole videos per device and step.
        fps: frame rate of the items' frames.
        seed: order seed.
    """

    def __init__(self, items: list[VideoItem], videos_per_batch: int = 4, fps: float = 1.0, seed: int = 0) -> None:
        super().__init__(batch_size=videos_per_batch, num_workers=0, seed=seed, train_set=_Videos(items))
        self.fps = fps

    def collate(self, samples: list[VideoItem]) -> dict[str, Any]:  # type: ignore[override]
        return build_batch(list(samples), self.fps)


class HecVLModule(L.LightningModule):
    """HecVL model + objective as a LightningModule.

    Args:
        model: the video–text model (its frozen text tower is not trained).
        objective: the loss (level InfoNCE, DTW, visual SSL, OphCLIP term).
        bank_items: videos whose silent clips fill the OphCLIP bank (usually the training videos; every rank
            re-encodes all of them, so the bank is identical on every rank).
        lr: peak AdamW learning rate; cosine decay to 0 over ``steps``.
        weight_decay: AdamW weight decay.
        steps: length of the schedule (the Trainer's ``max_steps``).
        fps: frame rate of the items' frames.
        seed: seeds each rank's view / negative-order generators (``seed`` + an offset per rank).
    """

    def __init__(
        self,
        model: HecVL,
        objective: HecVLObjective,
        bank_items: list[VideoItem] | None = None,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        steps: int = 100,
        fps: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model, self.objective = model, objective
        self.bank_items = bank_items or []
        self.lr, self.weight_decay, self.steps, self.fps, self.seed = lr, weight_decay, steps, fps, seed

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            # Different views and negative orders on each rank (the same seed everywhere would repeat them).
            for i, g in enumerate(_generators(self.objective).values()):
                g.manual_seed(self.seed * 1_000_003 + 7919 * (i + 1) + 104_729 * self.global_rank)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        obj = self.objective
        if obj.retrieval_weight > 0 and self.bank_items and obj.bank.due(self.global_step):
            obj.refresh_bank(self.model, self.bank_items, self.global_step, self.fps)
        out = obj(self.model, batch)
        n = len(batch["video_texts"])
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, batch_size=n, prog_bar=False)
        self.log("loss", out["loss"].detach(), batch_size=n, prog_bar=True)
        return out["loss"]

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = cosine_schedule(opt, self.steps)  # the schedule of vlp_surgical.training.pretrain
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.objective.clamp_parameters()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Tensors and ints only: the .ckpt loads with torch.load(weights_only=True).
        checkpoint["vlp_surgical"] = {
            "generators": {k: g.get_state() for k, g in _generators(self.objective).items()},
            "bank": self.objective.bank.bank.detach().cpu(),
            "bank_last_refresh": int(self.objective.bank.last_refresh),
            "steps": int(self.steps),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("vlp_surgical")
        if state is None:
            return
        if int(state.get("steps", self.steps)) != self.steps:
            # The cosine schedule spans `steps`: continuing under another length would silently change it.
            raise ValueError(f"checkpoint written for steps={state['steps']}, this run has steps={self.steps}")
        for k, g in _generators(self.objective).items():
            g.set_state(state["generators"][k])
        self.objective.bank.bank = state["bank"].to(self.objective.bank.bank.device)
        self.objective.bank.last_refresh = state["bank_last_refresh"]
