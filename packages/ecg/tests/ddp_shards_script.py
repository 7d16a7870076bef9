"""2-rank CPU (gloo) DDP training streaming ECG shards, run by test_shards.py (a script, not collected).

usage: ddp_shards_script.py SHARDS OUT straight | first | resume CKPT

Every rank appends ``{"step", "rank", "ids"}`` per training step to ``OUT/ids-<mode>-rank<r>.jsonl``. ``first``
checkpoints at step CKPT_STEP (mid-epoch of the second epoch) and is SIGKILLed (every rank) at KILL_STEP; ``resume``
continues from the checkpoint to TOTAL steps. S3 credentials and endpoint come from the AWS environment variables.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vlp_ecg.datasets import ECGDataModule

TOTAL, CKPT_STEP, KILL_STEP = 16, 11, 13  # 8 steps per epoch (64 train records, 2 ranks, batch 4)


class IdRecorder(L.LightningModule):
    """A one-parameter model that records the sample ids of every batch it trains on."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.log = log

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        with self.log.open("a") as f:
            f.write(json.dumps({"step": self.global_step + 1, "rank": self.global_rank, "ids": batch["key"]}) + "\n")
        return ((self.w * batch["ecg"]["signal"].mean()) ** 2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.strategy.barrier()
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    shards, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0)
    data = ECGDataModule(shards=shards, batch_size=4, num_workers=2, seed=5, cache_dir=str(out / "cache"))
    callbacks: list[L.Callback] = []
    if mode == "first":
        callbacks = [L.pytorch.callbacks.ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=CKPT_STEP,
                                                         save_top_k=-1), KillAt(KILL_STEP)]  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=TOTAL, logger=False,
                        enable_checkpointing=mode == "first", enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=out, callbacks=callbacks, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    rank_log = out / f"ids-{mode}-rank{os.environ.get('LOCAL_RANK', '0')}.jsonl"
    trainer.fit(IdRecorder(rank_log), data, ckpt_path=sys.argv[4] if mode == "resume" else None)
