"""Training-step cost of the ct3d demo's three models in fp32 and in bf16 mixed precision, and of the CLIP volume
tower's two widths, as ratios against fp32 in the same run (vlp-ct3d README, tenth round).

One step = forward, backward and the module's own optimiser, at the demo's sizes: CLIP (demo recipe, batch 32 of 32³
volumes and 32 phantom reports, cached MiniLM), VAE (AutoencoderKL 16-32-32, batch 4), latent diffusion (UNet 32-64
with cross-attention over 64 text tokens, batch 16 of 4×8³ latents). bf16 is ``torch.autocast("cpu", bfloat16)``,
as Lightning's ``precision="bf16-mixed"`` does it; the weights stay fp32. Variants are interleaved so that drift in
machine load hits each alike; medians after two warm-up steps. On a CPU without native bf16 (no AMX-BF16 /
AVX512-BF16) expect bf16 to be slower: ``resolve_precision("auto")`` does not pick it there.

    uv run python benchmarks/ct3d_precision.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402


def _interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 2):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _rows(med: dict[str, float], base: str) -> list[list[str]]:
    return [[name, f"{t * 1000:.0f}", f"{t / med[base]:.2f}x"] for name, t in med.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    import numpy as np
    import torch

    from vlp_core.losses import ClipLoss
    from vlp_core.training import cpu_has_native_bf16
    from vlp_ct3d.demo import DEMO_CLIP
    from vlp_ct3d.gen import LatentDiffusionModule, VAEModule
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.synth import phantom_report, sample_findings

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 32, 32, 32, generator=g)
    rng = np.random.default_rng(0)
    texts = [" ".join(phantom_report(sample_findings(rng, 0.3), rng)) for _ in range(len(x))]

    def step_fn(forward: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, bf16: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = forward()
            loss.float().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    clip_steps = {}
    for widths in ((16, 32, 64), (8, 32, 64)):
        for bf16 in (False, True):
            clip = build_ct_clip(**{**DEMO_CLIP, "widths": widths}, seed=0).train()
            loss_fn = ClipLoss()
            params = [p for p in [*clip.parameters(), *loss_fn.parameters()] if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-3)

            def fwd(clip=clip, loss_fn=loss_fn) -> torch.Tensor:  # noqa: ANN001
                return loss_fn(clip.towers["image"](x).embedding, clip.towers["text"](texts).embedding)["loss"]

            clip_steps[f"widths {'-'.join(map(str, widths))}, {'bf16-mixed' if bf16 else 'fp32'}"] = step_fn(
                fwd, opt, bf16
            )
    gen_steps = {}
    lat, ctx = torch.randn(16, 4, 8, 8, 8, generator=g), torch.randn(16, 64, 128, generator=g)
    for bf16 in (False, True):
        torch.manual_seed(0)
        vae = VAEModule(channels=(16, 32, 32), latent_channels=4, kl_weight=1e-6).train()
        opt = torch.optim.Adam(vae.autoencoder.parameters(), lr=1e-3)
        gen_steps[f"VAE, {'bf16-mixed' if bf16 else 'fp32'}"] = step_fn(
            lambda vae=vae: vae.generator_loss(x[:4], False)[0], opt, bf16
        )
    for bf16 in (False, True):
        torch.manual_seed(0)
        diff = LatentDiffusionModule(latent_channels=4, latent_shape=(8, 8, 8), context_dim=128, context_length=64,
                                     channels=(32, 64), attention_levels=(False, True), objective="rflow").train()  # fmt: skip
        opt = torch.optim.AdamW(diff.unet.parameters(), lr=1e-3)
        gen_steps[f"diffusion, {'bf16-mixed' if bf16 else 'fp32'}"] = step_fn(
            lambda diff=diff: diff.diffusion_loss(lat, ctx), opt, bf16
        )
    clip_med = _interleaved(clip_steps, args.repeats)
    gen_med = _interleaved(gen_steps, args.repeats)
    print(f"- {env_line()}\n- native bf16 on this CPU: {cpu_has_native_bf16()}\n- reproduce: `{repro_command()}`\n")
    print(markdown_table(["demo CLIP step", "ms / step (median)", "time / 16-32-64 fp32"],
                         _rows(clip_med, "widths 16-32-64, fp32")))  # fmt: skip
    print()
    rows = _rows({k: v for k, v in gen_med.items() if k.startswith("VAE")}, "VAE, fp32")
    rows += _rows({k: v for k, v in gen_med.items() if k.startswith("diffusion")}, "diffusion, fp32")
    print(markdown_table(["generative step", "ms / step (median)", "time / fp32"], rows))


if __name__ == "__main__":
    main()
