"""Plain DDP (no find_unused_parameters) with the real towers on 2 CPU processes: run by test_lightning_ddp.py.

Trains ImageTower + an unfrozen TextTower under ClipLoss for a few steps with two text fields routed through the one
text tower (captions for the contrastive term, several "aspects" per image for an optional multi-positive term that
only some batches carry); then checks that checkpoints hold every rank's own RNG state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from vlp_core.losses import ClipLoss, MultiPositiveClipLoss
from vlp_core.towers import ImageTower, TextTower
from vlp_core.training import LossTerm, PairedDataModule, Pretrainer

WORDS = ["red", "green", "blue", "round", "square", "small", "large", "striped"]


class Captioned(Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.words = torch.randint(len(WORDS), (n, 3), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        w = [WORDS[int(k)] for k in self.words[i]]
        # A ragged number of aspects per image (1-3): the multi-positive term sees different M on each rank.
        return {"image": self.images[i], "caption": " ".join(w), "aspects": w[: 1 + i % 3]}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    L.seed_everything(0)
    model = Pretrainer(
        {"image": ImageTower("resnet10t", embed_dim=16), "text": TextTower(embed_dim=16, freeze=False, max_length=16)},
        [
            LossTerm("clip", ClipLoss(), inputs=("image", "caption")),
            LossTerm("aspects", MultiPositiveClipLoss(), 0.5, inputs=("image", "aspects", "batch:aspects_owner")),
        ],
        inputs={"image": "image", "caption": "text", "aspects": "text"},
        lr=1e-3,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, PairedDataModule(batch_size=4, train_set=Captioned()))
    rank = trainer.global_rank
    # Each rank now draws from its own RNG stream; a checkpoint must keep all of them.
    torch.manual_seed(100 + rank)
    torch.rand(3)
    expected = torch.get_rng_state()
    trainer.save_checkpoint(out / "ddp.ckpt")
    ckpt = torch.load(out / "ddp.ckpt", weights_only=True)
    torch.rand(5)  # move on, then restore
    model.on_load_checkpoint(ckpt)
    restored = torch.equal(torch.get_rng_state(), expected)
    torch.save({"state": model.state_dict(), "rng_restored": restored, "expected_rng": expected},
               out / f"towers_rank{rank}.pt")  # fmt: skip
