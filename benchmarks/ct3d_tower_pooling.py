"""Cost of the ResNet volume tower's pooling variants at the demo size: one training step (forward, backward, AdamW)
on a batch of 32 volumes of 32³, as a ratio against max pooling in the same run. Untrained weights: cost only; what
each variant reaches is ``benchmarks/ct3d_zeroshot_variants.py`` (vlp-ct3d README, eighth round).

A second table times a whole CLIP step of the demo recipe (volume tower, cached MiniLM text tower, head, ClipLoss,
AdamW) with and without the ninth round's embedding noise (``text_noise``), in the same run.

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
    _text_noise_cost(x, args.repeats)


def _text_noise_cost(x, repeats: int) -> None:  # noqa: ANN001
    """A whole CLIP step of the demo recipe with and without embedding noise, interleaved."""
    import numpy as np
    import torch

    from vlp_core.losses import ClipLoss
    from vlp_ct3d.demo import DEMO_CLIP
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.synth import phantom_report, sample_findings

    rng = np.random.default_rng(0)
    texts = [" ".join(phantom_report(sample_findings(rng, 0.3), rng)) for _ in range(len(x))]
    models = {}
    for noise in (0.0, DEMO_CLIP["text_noise"]):
        clip = build_ct_clip(**{**DEMO_CLIP, "text_noise": noise}, seed=0).train()
        loss = ClipLoss()
        params = [p for p in [*clip.parameters(), *loss.parameters()] if p.requires_grad]
        models[f"text_noise {noise:g}"] = (clip, loss, torch.optim.AdamW(params, lr=1e-3))
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(repeats + 2):
        for name, (clip, loss, opt) in models.items():
            t0 = time.perf_counter()
            out = loss(clip.towers["image"](x).embedding, clip.towers["text"](texts).embedding)["loss"]
            out.backward()
            opt.step()
            opt.zero_grad()
            if i >= 2:  # warm-up (the first step fills the text cache)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["text_noise 0"])
    rows = [[name, f"{statistics.median(t) * 1000:.0f}", f"{statistics.median(t) / base:.2f}x"]
            for name, t in times.items()]  # fmt: skip
    print()
    print(markdown_table(["demo CLIP step", "ms / step (median)", "time / no noise"], rows))


if __name__ == "__main__":
    main()
