"""Worker for test_distributed.py: one rank of a 2-process gloo group (run as a script, not collected by pytest)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vlp_core.losses import ClipLoss, SigLipLoss

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
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
