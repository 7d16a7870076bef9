"""Training runs for test_training.py's resume test, each in its own process (run as a script, not collected).

usage: resume_script.py straight OUT | first CKPT_DIR | resume CKPT OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

from vlp_core.losses import ClipLoss
from vlp_core.towers import Tower, TowerOutput
from vlp_core.training import LossTerm, PairedDataModule, Pretrainer

TOTAL, STOP = 8, 4


class Mlp(Tower):
    def __init__(self) -> None:
        super().__init__()
        # Dropout makes the run depend on the RNG state, which the checkpoint must therefore carry.
        self.net = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 16))
        self.output_dim = 16

    def forward(self, x):
        return TowerOutput(self.net(x))


class Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(32, 8, generator=g)
        self.b = self.a @ torch.randn(8, 8, generator=g) + 0.1 * torch.randn(32, 8, generator=g)

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i):
        return {"x": self.a[i], "y": self.b[i]}


def model() -> Pretrainer:
    torch.manual_seed(0)
    towers = {"x": Mlp(), "y": Mlp()}
    return Pretrainer(
        towers, [LossTerm("clip", ClipLoss(), inputs=("x", "y"))], lr=5e-3, warmup_steps=2, max_steps=TOTAL
    )


def trainer(max_steps: int, root: Path, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=bool(callbacks), deterministic=True,
        default_root_dir=root, callbacks=list(callbacks),
    )  # fmt: skip


def save(m: Pretrainer, t: L.Trainer, out: Path) -> None:
    torch.save({"state": m.state_dict(), "optim": t.optimizers[0].state_dict(), "step": t.global_step}, out)


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    data = PairedDataModule(batch_size=8, train_set=Pairs(), seed=3)
    if mode == "straight":
        L.seed_everything(0)
        m, t = model(), trainer(TOTAL, path.parent)
        t.fit(m, data)
        save(m, t, path)
    elif mode == "first":
        L.seed_everything(0)
        saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=path, every_n_train_steps=STOP, save_top_k=-1)
        trainer(STOP, path, [saver]).fit(model(), data)  # the process then exits: a real stop
    elif mode == "resume":
        L.seed_everything(123)  # a different fresh-process state must not matter
        m, t = model(), trainer(TOTAL, path.parent)
        t.fit(m, data, ckpt_path=sys.argv[3])
        save(m, t, path)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
