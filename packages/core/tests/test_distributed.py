"""Two real processes (gloo): local loss + gather-with-grad equals the single-process full-batch loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORKER = Path(__file__).with_name("ddp_worker.py")


def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vlp_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_process_ddp_equals_full_batch(tmp_path: Path) -> None:
    init_file = tmp_path / "init"
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(r), str(init_file), str(tmp_path)], stderr=subprocess.PIPE)
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    w = _load_worker()
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(w.WORLD)]
    for name, chunk in w.CONFIGS:
        a, b = w.data()
        a, b = a.requires_grad_(), b.requires_grad_()
        full_fn = w.make(name, None)
        full = full_fn(a, b)["loss"]
        full.backward()
        assert a.grad.abs().sum() > 0  # the comparison is not vacuous
        for r, res in enumerate(results):
            got = res[f"{name}-{chunk}"]
            sl = slice(r * w.N_PER_RANK, (r + 1) * w.N_PER_RANK)
            torch.testing.assert_close(got["loss"], full.detach(), rtol=0, atol=1e-10)
            torch.testing.assert_close(got["grad_a"], a.grad[sl], rtol=0, atol=1e-10)
            torch.testing.assert_close(got["grad_b"], b.grad[sl], rtol=0, atol=1e-10)
            for k, p in full_fn.named_parameters():
                torch.testing.assert_close(got["params"][k], p.grad, rtol=0, atol=1e-10)
