"""The HecVL + PeskaVLP + OphCLIP objective under torch.distributed equals the single-process objective."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch

from vlp_surgical.synth import make_procedures


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_objective_is_exact_under_ddp_with_ragged_ranks(tmp_path: Path) -> None:
    """Rank 0 holds one video, rank 1 two (different numbers of clips, phases and videos per rank): the rank-averaged
    loss and gradients (DDP's all-reduce mean) equal the single-process objective on all three videos — every level
    InfoNCE, the DTW terms, the OphCLIP term; and NT-Xent with one rank holding no clip at all."""
    root = make_procedures(tmp_path / "p", n_train=3, n_val=0, n_test=0, size=32, phase_seconds=(3.0, 5.0),
                           silent_fraction=0.3)  # fmt: skip
    script = Path(__file__).with_name("ddp_objective_script.py")
    proc = subprocess.run([sys.executable, str(script), str(root), str(tmp_path), _free_port()],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert r["terms"] == r["ref_terms"]
        assert {"clip", "phase", "phase_children", "video", "clip_retrieval", "dtw_video", "dtw_phase"} <= set(
            r["terms"]
        )
        torch.testing.assert_close(r["loss"], r["ref_loss"], rtol=1e-5, atol=1e-6)
        assert r["grads"].keys() == r["ref_grads"].keys() and len(r["grads"]) > 10
        for k, v in r["ref_grads"].items():
            # float32 sums in another order: ~1e-5 of the gradient's scale; a wrong mean would be off by ~30 %.
            torch.testing.assert_close(r["grads"][k], v, rtol=1e-3, atol=2e-4 * float(v.abs().max()) + 1e-8, msg=k)
        torch.testing.assert_close(r["nt"], r["ref_nt"], rtol=1e-5, atol=1e-6)
        for got, want in zip(r["nt_grads"], r["ref_nt_grads"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
