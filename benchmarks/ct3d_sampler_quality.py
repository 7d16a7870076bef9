"""Text-to-CT sample quality per sampler at demo scale: rectified-flow-30 vs DDIM-50 vs DDPM-1000.

Trains, on the demo's phantoms (seed 0), the demo's 3D CLIP and VAE, then two latent diffusion models that differ
only in their objective (rectified flow, v-target; DDPM ε-target), same UNet, schedule and steps. Each sampler
generates one volume per held-out report (the first ``--n`` of the demo's ``valid`` split) and is scored with the
demo's metrics: 3D FID on our CLIP volume features against the real volumes of those reports, CLIP-score (cosine of
volume and its prompt), and factual correctness (our zero-shot classifier's macro AUROC on the generated volumes,
labels = findings in the prompt). Two floors: FID between two disjoint sets of real held-out volumes of the same
size (how far FID on ``n`` volumes is from 0 by sampling alone), and the real volumes' CLIP-score / zero-shot AUROC.

Nothing is selected here: it is a measurement of fixed recipes.

    uv run python benchmarks/ct3d_sampler_quality.py --n 32
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
    ap.add_argument("--n", type=int, default=32, help="held-out prompts (one volume each per sampler)")
    ap.add_argument("--ddpm_steps", type=int, default=1000)
    ap.add_argument("--data_dir", default="runs/ct3d-variants-data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from vlp_ct3d.ctrate import ctrate_index
    from vlp_ct3d.demo import CONTEXT_LENGTH, DEMO_SCALES, prepare_demo_data
    from vlp_ct3d.gen import LatentDiffusionModule, VAEModule
    from vlp_ct3d.genmetrics import clip_score, factual_correctness, fid, tower_extractor
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.pipeline import fit_diffusion, fit_vae, generate_volumes, text_context
    from vlp_ct3d.synth import CLASS_PROMPTS, DEMO_CLASSES
    from vlp_ct3d.train import VolumeTextSet, fit_clip, load_split
    from vlp_ct3d.transforms import PRESETS

    torch.set_num_threads(2)
    cfg, seed, n = DEMO_SCALES["small"], args.seed, args.n
    root = prepare_demo_data(Path(args.data_dir), cfg["n_train"], cfg["n_valid"], seed, progress=False)
    cache = Path(args.data_dir) / "preprocessed-demo"
    classes = list(DEMO_CLASSES)
    x_tr, t_tr, y_tr, _ = load_split(ctrate_index(root, "train"), "demo", cache, classes)
    x_te, t_te, y_te, _ = load_split(ctrate_index(root, "valid"), "demo", cache, classes)
    if 2 * n > len(x_te):
        raise SystemExit(f"--n {n}: need 2n <= {len(x_te)} held-out volumes (the second half is the FID floor)")

    t0 = time.perf_counter()
    clip = build_ct_clip(embed_dim=128, widths=(16, 32, 64), max_steps=cfg["clip_steps"], lr=2e-3, seed=seed)
    fit_clip(clip, VolumeTextSet(x_tr, t_tr, y_tr, augment=True, sentence_prob=0.5, seed=seed), cfg["clip_steps"],
             cfg["clip_batch"], seed)  # fmt: skip
    vae = VAEModule(channels=(16, 32, 32), latent_channels=4, kl_weight=1e-6)
    fit_vae(vae, x_tr, cfg["vae_steps"], cfg["vae_batch"], seed)
    latents, _ = vae.encode_latents(x_tr)
    contexts = text_context(clip, t_tr, CONTEXT_LENGTH)
    p = PRESETS["demo"]
    geometry = {"spacing": list(p.spacing), "size": list(p.size), "hu_window": list(p.hu_window),
                "out_range": list(p.out_range)}  # fmt: skip
    models = {}
    for objective in ("rflow", "eps"):
        torch.manual_seed(seed)
        m = LatentDiffusionModule(latent_channels=4, latent_shape=tuple(latents.shape[2:]), context_dim=128,
                                  context_length=CONTEXT_LENGTH, channels=(32, 64), attention_levels=(False, True),
                                  objective=objective, cond_drop=0.1, ema_decay=0.995, lr=1e-3, geometry=geometry)  # fmt: skip
        models[objective] = fit_diffusion(m, latents, contexts, cfg["diff_steps"], cfg["diff_batch"], seed)
    train_s = time.perf_counter() - t0

    prompts, real, labels = list(t_te[:n]), x_te[:n], y_te[:n]
    extract = tower_extractor(clip)
    rows = []
    for name, objective, sampler, steps in (("rectified flow", "rflow", "rflow", 30), ("DDIM", "eps", "ddim", 50),
                                            ("DDPM", "eps", "ddpm", args.ddpm_steps)):  # fmt: skip
        t0 = time.perf_counter()
        gen = generate_volumes(clip, vae, models[objective], prompts, seed=seed, guidance=3.0, steps=steps,
                               sampler=sampler)  # fmt: skip
        per_volume = (time.perf_counter() - t0) / n
        fact = factual_correctness(clip, gen, labels, real, labels, CLASS_PROMPTS)
        rows.append([name, steps, f"{per_volume:.2f}", f"{fid(real, gen, extract):.4f}",
                     f"{clip_score(clip, gen, prompts):.3f}", f"{fact['generated macro AUROC']:.3f}"])  # fmt: skip
        print(rows[-1], flush=True)
    floor_fid = fid(real, x_te[n : 2 * n], extract)
    fact_real = factual_correctness(clip, real, labels, real, labels, CLASS_PROMPTS)["real macro AUROC"]
    rows.append([f"real held-out volumes (floor: FID vs {n} other real ones)", "–", "–", f"{floor_fid:.4f}",
                 f"{clip_score(clip, real, prompts):.3f}", f"{fact_real:.3f}"])  # fmt: skip
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`\n- training (CLIP, VAE, two diffusion models): "
          f"{train_s:.0f} s; {n} held-out prompts, guidance 3, seed {seed}\n")  # fmt: skip
    print(markdown_table(["sampler", "steps", "s / volume", "3D FID (CLIP features)", "CLIP-score",
                          "factual correctness (zero-shot AUROC)"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
