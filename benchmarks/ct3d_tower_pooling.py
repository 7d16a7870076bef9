"""Cost of the ResNet volume tower's pooling variants at the demo size: one training step (forward, backward, AdamW)
on a batch of 32 volumes of 32³, as a ratio against max pooling in the same run. Untrained weights: cost only; what
each variant reaches is ``benchmarks/ct3d_zeroshot_variants.py`` (vlp-ct3d README, eighth round).

    uv run python benchmarks/ct3d_tower_pooling.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    import torch

    from vlp_ct3d.models import ResNet3dTower

    torch.set_num_threads(2)
    variants = [("max", "max", 0), ("mean ‖ max", "meanmax", 0), ("pyramid, channel maxima (demo)", "pyramid", 0),
                ("pyramid, 16 detectors", "pyramid", 16), ("pyramid, 32 detectors", "pyramid", 32)]  # fmt: skip
    x = torch.rand(args.batch, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    towers = {}
    for name, pooling, det in variants:
        torch.manual_seed(0)
        tower = ResNet3dTower(widths=(16, 32, 64), embed_dim=128, pooling=pooling, pyramid_detectors=det)
        towers[name] = (tower, torch.optim.AdamW(tower.parameters(), lr=1e-3))
    times: dict[str, list[float]] = {name: [] for name in towers}
    for i in range(args.repeats + 2):  # interleaved, so drift in machine load hits every variant alike
        for name, (tower, opt) in towers.items():
            t0 = time.perf_counter()
            tower(x).embedding.square().mean().backward()
            opt.step()
            opt.zero_grad()
            if i >= 2:  # warm-up
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["max"])
    rows = [[name, f"{statistics.median(t) * 1000:.0f}", f"{statistics.median(t) / base:.2f}x"]
            for name, t in times.items()]  # fmt: skip
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`\n")
    print(markdown_table(["pooling", "ms / step (median)", "time / max"], rows))


if __name__ == "__main__":
    main()
