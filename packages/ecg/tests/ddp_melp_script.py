"""MELP under plain DDP (no find_unused_parameters) on 2 CPU processes, one level switched off: run by
test_ddp_melp.py. Saves each rank's final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from vlp_core.training import PairedDataModule
from vlp_ecg.models import MELP

PHRASES = ["sinus rhythm", "left bundle branch block", "atrial fibrillation", "st elevation", "normal ecg"]


class RandomECG(Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 12, 500, generator=g)
        self.k = torch.randint(len(PHRASES), (n, 2), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        rpeaks = torch.tensor([50, 130, 210, 290, 370, 450])
        text = f"{PHRASES[int(self.k[i, 0])]}. {PHRASES[int(self.k[i, 1])]}."
        return {"ecg": {"signal": self.x[i], "rpeaks": rpeaks}, "text": text}


if __name__ == "__main__":
    out, off = Path(sys.argv[1]), sys.argv[2]
    L.seed_everything(0)
    model = MELP(size="tiny", fs=50.0, embed_dim=16, token_dim=16, text_max_length=24, decoder_layers=1,
                 weights={off: 0.0}, lr=1e-3)  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, PairedDataModule(batch_size=4, train_set=RandomECG()))
    torch.save({"state": model.state_dict(), "terms": [t.name for t in model.losses]},
               out / f"rank{trainer.global_rank}.pt")  # fmt: skip
