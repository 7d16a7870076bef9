"""Hellinger InfoNCE and PCME++ (closed-form sampled distance) vs core ClipLoss: forward+backward time and peak
memory at D = 512 (probabilistic losses take [mu, logvar] = 2D-wide inputs). Reported as ratios to ClipLoss.

    uv run python benchmarks/medical_losses.py            # N = 256, 1024, 4096
    uv run python benchmarks/medical_losses.py --quick    # N = 256, 512
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import PeakRSS, env_line, fmt_bytes, fmt_ratio, interleaved, markdown_table, median, repro_command

from vlp_core.losses import ClipLoss
from vlp_medical.prob import HellingerInfoNCE, PCMEppLoss


def _step(loss: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().requires_grad_()
    b = b.detach().requires_grad_()
    t = time.perf_counter()
    loss(a, b)["loss"].backward()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    sizes = (256, 512) if args.quick else (256, 1024, 4096)
    torch.manual_seed(0)
    rows = []
    for n in sizes:
        d = args.dim
        a, b = torch.randn(n, d), torch.randn(n, d)
        pa = torch.cat([torch.randn(n, d), torch.randn(n, d) * 0.3 - 2], 1)
        pb = torch.cat([torch.randn(n, d), torch.randn(n, d) * 0.3 - 2], 1)
        losses = {"ClipLoss": (ClipLoss(), a, b), "HellingerInfoNCE (chunk 128)": (HellingerInfoNCE(chunk_size=128), pa, pb),
                  "PCMEppLoss": (PCMEppLoss(), pa, pb)}  # fmt: skip
        repeats = 5 if n < 4096 else 2
        times = interleaved({k: (lambda v=v: _step(*v)) for k, v in losses.items()}, repeats)
        mem = {}
        for k, v in losses.items():
            with PeakRSS() as peak:
                _step(*v)
            mem[k] = peak.hwm
        base_t, base_m = median(times["ClipLoss"]), max(mem["ClipLoss"], 1)
        for k in losses:
            rows.append([n, k, f"{median(times[k]):.1f}", fmt_ratio(median(times[k]) / base_t), fmt_bytes(mem[k]),
                         fmt_ratio(mem[k] / base_m)])  # fmt: skip
    print(markdown_table(["N", "loss", "fwd+bwd ms (median)", "time / ClipLoss", "peak ΔRSS", "mem / ClipLoss"], rows))
    print()
    print(f"- {env_line()}; D = {args.dim}")
    print(f"- reproduce: `{repro_command()}`")


if __name__ == "__main__":
    main()
