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


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """Run the 2-process gloo worker once for every test of this module."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    tmp_path = tmp_path_factory.mktemp("ddp")
    init_file = tmp_path / "init"
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(r), str(init_file), str(tmp_path)], stderr=subprocess.PIPE)
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_process_ddp_equals_full_batch(ddp_results: list[dict]) -> None:
    w = _load_worker()
    results = ddp_results
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


def test_two_process_ragged_losses_equal_full_batch(ddp_results: list[dict]) -> None:
    """Ranks with different numbers of anchors, texts and beats: MultiPositiveClipLoss (owner index, weights, with
    and without text ids) and LocalAlignmentLoss equal the single-process loss on the whole batch, with gradients."""
    from vlp_core.losses import LocalAlignmentLoss, MultiPositiveClipLoss

    w = _load_worker()
    mp = w.mp_ragged
    results = ddp_results
    for use_ids in (False, True):
        a, b = mp.data()
        a.requires_grad_(True)
        b.requires_grad_(True)
        kw = {"ids": mp.IDS} if use_ids else {}
        full = MultiPositiveClipLoss().double()(a, b, mp.OWNER, weights=mp.WEIGHTS, **kw)["loss"]
        ga, gb = torch.autograd.grad(full, (a, b))
        for r, res in enumerate(results):
            got = res[f"mp-ids{use_ids}"]
            sa, sb = mp.rank_slices(r)
            torch.testing.assert_close(got["loss"], full.detach(), rtol=0, atol=1e-10)
            torch.testing.assert_close(got["grad_a"], ga[sa], rtol=0, atol=1e-10)
            torch.testing.assert_close(got["grad_b"], gb[sb], rtol=0, atol=1e-10)
    beats, bmask, sents, smask = w.local_data()
    beats.requires_grad_(True)
    sents.requires_grad_(True)
    full = LocalAlignmentLoss()(beats, bmask, sents, smask)["loss"]
    gq, gs = torch.autograd.grad(full, (beats, sents))
    for r, res in enumerate(results):
        sl, nb = (slice(0, 3), 4) if r == 0 else (slice(3, 5), 2)
        torch.testing.assert_close(res["local"]["loss"], full.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(res["local"]["grad_a"], gq[sl, :nb], rtol=0, atol=1e-10)
        torch.testing.assert_close(res["local"]["grad_b"], gs[sl], rtol=0, atol=1e-10)
