"""Training runs for test_training.py's resume test, each in its own process (run as a script, not collected).

usage: resume_script.py straight OUT | first CKPT_DIR [STOP] | resume CKPT OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from vlp_core.losses import ClipLoss
from vlp_core.testing import BoringTower, RandomPairs
from vlp_core.training import LossTerm, PairedDataModule, Pretrainer

TOTAL, STOP = 8, 4


def model() -> Pretrainer:
    torch.manual_seed(0)
    # Dropout makes the run depend on the RNG state, which the checkpoint must therefore carry.
    towers = {"x": BoringTower(dropout=0.2), "y": BoringTower(dropout=0.2)}
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
    data = PairedDataModule(batch_size=8, train_set=RandomPairs(32), seed=3)
    if mode == "straight":
        L.seed_everything(0)
        m, t = model(), trainer(TOTAL, path.parent)
        t.fit(m, data)
        save(m, t, path)
    elif mode == "first":
        L.seed_everything(0)
        stop = int(sys.argv[3]) if len(sys.argv) > 3 else STOP  # 6 stops in the middle of the second epoch
        saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=path, every_n_train_steps=stop, save_top_k=-1)
        trainer(stop, path, [saver]).fit(model(), data)  # the process then exits: a real stop
    elif mode == "resume":
        L.seed_everything(123)  # a different fresh-process state must not matter
        m, t = model(), trainer(TOTAL, path.parent)
        t.fit(m, data, ckpt_path=sys.argv[3])
        save(m, t, path)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
