"""Lightning DDP on 2 CPU processes (gloo): run as a script by test_lightning_ddp.py, not collected by pytest.

Trains the Pretrainer with ClipLoss for a few steps with strategy="ddp" and, on each rank, saves the final weights,
the loss history and the gathered batch size the loss saw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from vlp_core.losses import ClipLoss
from vlp_core.testing import BoringTower, RandomPairs
from vlp_core.training import LossTerm, PairedDataModule, Pretrainer


class Record(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    L.seed_everything(0)
    model = Pretrainer(
        {"x": BoringTower(layer_norm=False), "y": BoringTower(layer_norm=False)},
        [LossTerm("clip", ClipLoss(), inputs=("x", "y"))],
        lr=1e-2,
    )
    rec = Record()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=12, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec],
    )  # fmt: skip
    trainer.fit(model, PairedDataModule(batch_size=8, train_set=RandomPairs(64, noise=0.0)))
    torch.save({"state": model.state_dict(), "losses": rec.losses}, out / f"rank{trainer.global_rank}.pt")
