"""Text-to-CT sampling cost at the demo size: DDPM-1000 vs DDIM-50 vs rectified-flow-30 (time per generated
volume, VAE decode included, CFG on), and the cost of one denoiser call in latent space (4 x 8^3) vs pixel space
(1 x 32^3, same UNet widths). Untrained weights: this measures cost only; the FID/CLIP-score each sampler reaches
with trained models is ``benchmarks/ct3d_sampler_quality.py``.

    uv run python benchmarks/ct3d_samplers.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ddpm_steps", type=int, default=1000)
    args = ap.parse_args()
    import torch

    from vlp_ct3d.gen import LatentDiffusionModule, VAEModule

    torch.set_num_threads(2)
    torch.manual_seed(0)
    vae = VAEModule(channels=(16, 32, 32), latent_channels=4).eval()
    kw = {"context_dim": 128, "context_length": 64, "channels": (32, 64), "attention_levels": (False, True)}
    rflow = LatentDiffusionModule(latent_shape=(8, 8, 8), objective="rflow", **kw).eval()
    eps = LatentDiffusionModule(latent_shape=(8, 8, 8), objective="eps", **kw).eval()
    ctx = torch.randn(1, 64, 128)
    rows = []
    with torch.no_grad():
        for name, model, sampler, steps in (("rectified flow", rflow, "rflow", 30), ("DDIM", eps, "ddim", 50),
                                            ("DDPM", eps, "ddpm", args.ddpm_steps)):  # fmt: skip
            t0 = time.perf_counter()
            z = model.sample(
                ctx, guidance=3.0, steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0)
            )
            vae.decode(z)
            rows.append([name, steps, f"{time.perf_counter() - t0:.2f}"])
        base = float(rows[0][2])
        for r in rows:
            r.append(f"{float(r[2]) / base:.1f}x")
        pixel = LatentDiffusionModule(latent_channels=1, latent_shape=(32, 32, 32), objective="rflow", **kw).eval()
        t_lat, t_pix = [], []
        for _ in range(3):
            for m, x, acc in (
                (rflow, torch.randn(2, 4, 8, 8, 8), t_lat),
                (pixel, torch.randn(2, 1, 32, 32, 32), t_pix),
            ):
                t0 = time.perf_counter()
                m.ema(x, torch.tensor([500.0, 500.0]), context=ctx.expand(2, -1, -1))
                acc.append(time.perf_counter() - t0)
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`\n")
    print(markdown_table(["sampler", "steps", "s / volume (CFG, decode incl.)", "time / rflow-30"], rows))
    print(
        f"\nOne CFG denoiser call (batch 2): latent 4x8^3 {min(t_lat) * 1e3:.1f} ms, pixel 1x32^3 "
        f"{min(t_pix) * 1e3:.1f} ms -> pixel/latent = {min(t_pix) / min(t_lat):.1f}x"
    )


if __name__ == "__main__":
    main()
