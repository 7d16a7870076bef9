"""The Pretrainer under Lightning's DDP strategy on 2 CPU processes: trains, stays in sync, loss falls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("lightning_ddp_script.py")


def test_pretrainer_trains_under_lightning_ddp(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0, msg=key)  # replicas identical
    assert len(r0["losses"]) == 12
    assert r0["losses"] != r1["losses"]  # each rank scores its own rows (local loss), not a copy of the other's
    for losses in (r0["losses"], r1["losses"]):
        assert sum(losses[-3:]) / 3 < 0.5 * losses[0]


def test_real_towers_train_under_plain_ddp_and_checkpoint_every_rank_rng(tmp_path: Path) -> None:
    """ImageTower + unfrozen TextTower (two routed text fields, ragged multi-positive term) under strategy="ddp"
    without find_unused_parameters: no unused-parameter error, replicas stay identical, and the checkpoint holds and
    restores each rank's own RNG state."""
    script = Path(__file__).with_name("lightning_ddp_towers_script.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"towers_rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in r0["state"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts (at each forward)
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0, msg=key)
    assert not any("token_proj" in k for k in r0["state"])  # ClipLoss reads no tokens: the head is not built
    assert r0["rng_restored"] and r1["rng_restored"]
    assert not torch.equal(r0["expected_rng"], r1["expected_rng"])  # the two ranks' states really differ
    ckpt = torch.load(tmp_path / "ddp.ckpt", weights_only=True)
    assert len(ckpt["vlp_rng_ranks"]) == 2
    for r, res in enumerate((r0, r1)):
        assert torch.equal(ckpt["vlp_rng_ranks"][r]["torch"], res["expected_rng"])
