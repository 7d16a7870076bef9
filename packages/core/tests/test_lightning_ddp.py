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
