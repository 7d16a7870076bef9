"""MELP with one level switched off trains under plain DDP: no parameter is left without gradient."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_melp_script.py")


@pytest.mark.parametrize("off", ["token"])
def test_melp_with_a_level_off_trains_under_plain_ddp(tmp_path: Path, off: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), off], capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert off not in r0["terms"]
    assert not any("token_proj" in k for k in r0["state"])  # the token head is not built without the token level
    for key, value in r0["state"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0, msg=key)
