"""Worker for test_distributed.py: one rank of a 2-process gloo group (run as a script, not collected by pytest)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vlp_core.losses import ClipLoss, LocalAlignmentLoss, MultiPositiveClipLoss, SigLipLoss

sys.path.insert(0, str(Path(__file__).parent))
import mp_ragged  # noqa: E402 - the shared ragged fixture beside this file

CONFIGS = [("clip", None), ("siglip", None), ("clip", 4), ("siglip", 4)]
WORLD, N_PER_RANK, DIM = 2, 6, 8


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    a = torch.randn(WORLD * N_PER_RANK, DIM, generator=g, dtype=torch.float64)
    b = torch.randn(WORLD * N_PER_RANK, DIM, generator=g, dtype=torch.float64)
    return a, b


def make(name: str, chunk: int | None):
    return {"clip": ClipLoss, "siglip": SigLipLoss}[name](chunk_size=chunk).double()


def main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        a, b = data()
        sl = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        results = {}
        for name, chunk in CONFIGS:
            a_loc, b_loc = a[sl].clone().requires_grad_(), b[sl].clone().requires_grad_()
            loss_fn = make(name, chunk)
            loss = loss_fn(a_loc, b_loc)["loss"]
            loss.backward()
            # What DDP does to gradients: average over ranks (features get the same 1/world factor).
            for p in loss_fn.parameters():
                dist.all_reduce(p.grad)
                p.grad /= WORLD
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[f"{name}-{chunk}"] = {
                "loss": mean_loss / WORLD,
                "grad_a": a_loc.grad / WORLD,
                "grad_b": b_loc.grad / WORLD,
                "params": {k: v.grad for k, v in loss_fn.named_parameters()},
            }
        results.update(ragged(rank))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # Both ranks past every collective before teardown: a rank that destroys the group while the other's gloo
        # threads still work can abort at exit ("terminate called without an active exception", seen once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def local_data() -> tuple[torch.Tensor, ...]:
    """GLoRIA inputs for 5 samples split 3 / 2 over the ranks, with a different number of beats on each rank."""
    g = torch.Generator().manual_seed(7)
    beats = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    sents = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    bmask = torch.ones(5, 4, dtype=torch.bool)
    bmask[3:, 2:] = False  # rank 1's samples have 2 beats: it trims its beat columns, so ranks hold [3,4] vs [2,2]
    smask = torch.ones(5, 2, dtype=torch.bool)
    return beats, bmask, sents, smask


def ragged(rank: int) -> dict:
    """Multi-positive loss with different B and M per rank (owner index, weights, text ids) and the local loss."""
    out = {}
    for use_ids in (False, True):
        a, b = mp_ragged.data()
        sa, sb = mp_ragged.rank_slices(rank)
        a_loc, b_loc = a[sa].clone().requires_grad_(), b[sb].clone().requires_grad_()
        kw = {"ids": mp_ragged.IDS[sb]} if use_ids else {}
        loss = MultiPositiveClipLoss().double()(a_loc, b_loc, mp_ragged.local_owner(rank),
                                                 weights=mp_ragged.WEIGHTS[sb], **kw)["loss"]  # fmt: skip
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        out[f"mp-ids{use_ids}"] = {"loss": mean / WORLD, "grad_a": a_loc.grad / WORLD, "grad_b": b_loc.grad / WORLD}
    beats, bmask, sents, smask = local_data()
    sl = slice(0, 3) if rank == 0 else slice(3, 5)
    nb = 4 if rank == 0 else 2
    q, s = beats[sl, :nb].clone().requires_grad_(), sents[sl].clone().requires_grad_()
    loss = LocalAlignmentLoss()(q, bmask[sl, :nb], s, smask[sl])["loss"]
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    out["local"] = {"loss": mean / WORLD, "grad_a": q.grad / WORLD, "grad_b": s.grad / WORLD}
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    # Skip interpreter finalisation: gloo's threads can still hold work objects whose destruction at exit aborts the
    # process ("terminate called without an active exception"; seen in CI twice, once after the barrier above was
    # added). Everything the test reads was saved before; a failure in main() still exits non-zero.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
