"""`vlp demo ct3d`: generate chest phantoms in the CT-RATE layout (cached), read them back through the real CT-RATE
indexer and MONAI preprocessing (persistent cache), train the 3D CLIP, a shuffled-pair control, the VAE and the
text-conditioned latent diffusion model on CPU, and report:

- zero-shot macro AUROC on held-out phantoms (CT-RATE ``valid`` split) with the class-name prompt pairs and with
  the disjoint prompt set, beside two controls (randomly initialised volume tower; CLIP trained on shuffled pairs)
  and a linear probe (weight decay chosen on a patient-level validation part of ``train``);
- retrieval (report→volume R@K, volume→volume Jaccard MAP@K with the query excluded, mAP);
- VAE reconstruction PSNR on held-out volumes;
- text-to-CT factual correctness: the zero-shot classifier's macro AUROC on volumes generated from held-out reports
  (labels = findings in the prompt) vs on the real held-out volumes, plus 3D FID and CLIP-score.

Nothing is tuned on the held-out split: fixed schedules, no checkpoint selection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["DEMO_CLIP", "DEMO_PRECISION", "DEMO_SCALES", "run_demo", "prepare_demo_data"]

#: The demo's CLIP recipe (``build_ct_clip`` keyword arguments), chosen on a patient-level validation part of the
#: training phantoms (package README, eighth and ninth rounds): an MLP text head (a linear head cannot make MiniLM's
#: generic "not" direction finding-specific), trained on MiniLM embeddings with Gaussian noise of twice their own std
#: (the head then keeps to directions that paraphrases share; without it the head fits the reports' wording), and
#: pyramid pooling (the finer stages' maxima; small findings); 8 channels at the volume tower's 16^3 stage instead of
#: 16 (tenth round: ~30% less training time, validation zero-shot within the seed spread).
DEMO_CLIP: dict[str, Any] = {"embed_dim": 128, "widths": (8, 32, 64), "lr": 2e-3, "text_proj": "mlp",
                             "pooling": "pyramid", "pyramid_detectors": 0, "text_noise": 2.0}  # fmt: skip

#: Lightning precision of the demo's three trainings: bf16 mixed precision where the CPU/GPU computes bf16 natively
#: (on an AMX CPU the CLIP trains ~1.25x and the VAE ~2x faster; validation zero-shot within the seed spread of fp32,
#: package README tenth round), fp32 elsewhere (emulated bf16 would be slower). Evaluation always runs in fp32.
DEMO_PRECISION = "auto"

DEMO_SCALES: dict[str, dict[str, Any]] = {
    "small": {"n_train": 400, "n_valid": 150, "clip_steps": 1200, "clip_batch": 32, "vae_steps": 150, "vae_batch": 4,
              "diff_steps": 300, "diff_batch": 16, "n_generate": 48, "sample_steps": 20},
    "large": {"n_train": 1600, "n_valid": 400, "clip_steps": 2000, "clip_batch": 32, "vae_steps": 1500,
              "vae_batch": 4, "diff_steps": 3000, "diff_batch": 16, "n_generate": 200, "sample_steps": 30},
}  # fmt: skip
DATA_VERSION = "v2"
NEGATIVE_PROB = 0.85
CONTEXT_LENGTH = 64


def prepare_demo_data(
    data_dir: Path, n_train: int, n_valid: int, seed: int, progress: bool = True, negative_prob: float | None = None
) -> Path:
    """Generate (once) the phantom CT-RATE tree; returns its root."""
    from vlp_ct3d.synth import make_fake_ctrate

    neg = NEGATIVE_PROB if negative_prob is None else negative_prob
    tag = "" if neg == NEGATIVE_PROB else f"-neg{neg:g}"
    root = Path(data_dir) / f"ctrate-phantoms-{DATA_VERSION}{tag}-n{n_train}-{n_valid}-seed{seed}"
    if not (root / "PHANTOMS.txt").is_file():
        make_fake_ctrate(root, n_train=n_train, n_valid=n_valid, seed=seed, progress=progress, negative_prob=neg)
    return root


def _zeroshot_rows(models: dict[str, Any], feats: dict[str, tuple], prompt_sets: dict[str, dict]) -> list[dict]:
    from vlp_ct3d.eval import zeroshot_scores, zeroshot_table

    rows = []
    for model_name, model in models.items():
        f, y = feats[model_name]
        for set_name, prompts in prompt_sets.items():
            scores, classes = zeroshot_scores(model, f, prompts)
            res = zeroshot_table(scores, y, classes, n_boot=1000)
            rows.append({"model": model_name, "prompts": set_name, "macro AUROC": res["macro_auroc"],
                         "CI low": res["ci_low"], "CI high": res["ci_high"],
                         **{c: v["auroc"] for c, v in res["per_class"].items()}})  # fmt: skip
    return rows


def run_demo(ctx: Any) -> Any:
    """Demo entry point registered as ``ct3d`` (``vlp demo ct3d``); see the module docstring."""
    import numpy as np

    from vlp_core.demo import DemoResult
    from vlp_core.training import resolve_precision
    from vlp_ct3d.ctrate import ctrate_index
    from vlp_ct3d.eval import (
        encode_texts,
        encode_volumes,
        format_rows,
        linear_probe_auroc,
        report_text_zeroshot,
        retrieval_report,
        write_table,
        zeroshot_alignment,
    )
    from vlp_ct3d.gen import LatentDiffusionModule, VAEModule
    from vlp_ct3d.genmetrics import clip_score, factual_correctness, fid, tower_extractor
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.pipeline import fit_diffusion, fit_vae, generate_volumes, psnr, text_context, write_volume
    from vlp_ct3d.plot import plot_alignment
    from vlp_ct3d.synth import CLASS_PROMPTS, DEMO_CLASSES, DISJOINT_PROMPTS
    from vlp_ct3d.train import VolumeTextSet, fit_clip, load_split
    from vlp_ct3d.transforms import PRESETS

    cfg = DEMO_SCALES.get(ctx.scale, DEMO_SCALES["small"])
    precision = resolve_precision(DEMO_PRECISION)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    root = prepare_demo_data(Path(ctx.data_dir), cfg["n_train"], cfg["n_valid"], ctx.seed, ctx.progress)
    classes = list(DEMO_CLASSES)
    train_df, test_df = ctrate_index(root, "train"), ctrate_index(root, "valid")
    cache = Path(ctx.data_dir) / "preprocessed-demo"
    x_tr, t_tr, y_tr, _ = load_split(train_df, "demo", cache, classes, ctx.progress)
    x_te, t_te, y_te, _ = load_split(test_df, "demo", cache, classes, ctx.progress)
    times["data"] = time.perf_counter() - t
    # Patient-level validation part of train (for the linear probe's weight decay only).
    patients = train_df["patient"].to_numpy()
    val_mask = torch.from_numpy(np.array([int(p.split("_")[1]) % 5 == 0 for p in patients]))

    t = time.perf_counter()
    clip = build_ct_clip(**DEMO_CLIP, max_steps=cfg["clip_steps"], seed=ctx.seed)
    fit_clip(clip, VolumeTextSet(x_tr, t_tr, y_tr, augment=True, sentence_prob=0.5, seed=ctx.seed), cfg["clip_steps"], cfg["clip_batch"],
             ctx.seed, ctx.progress, precision=precision)  # fmt: skip
    times["clip"] = time.perf_counter() - t
    t = time.perf_counter()
    shuffled = build_ct_clip(**DEMO_CLIP, max_steps=cfg["clip_steps"], seed=ctx.seed)
    fit_clip(shuffled, VolumeTextSet(x_tr, t_tr, y_tr, augment=True, shuffle_pairs=True, sentence_prob=0.5,
                                    seed=ctx.seed),
             cfg["clip_steps"], cfg["clip_batch"], ctx.seed, ctx.progress, precision=precision)  # fmt: skip
    times["shuffled control"] = time.perf_counter() - t
    random_tower = build_ct_clip(**DEMO_CLIP, seed=ctx.seed + 1)
    random_tower.towers["text"] = clip.towers["text"]  # trained text side, untrained volume side
    random_tower.losses = clip.losses

    t = time.perf_counter()
    test_set = VolumeTextSet(x_te, t_te, y_te)
    models = {"CLIP": clip, "control: random volume tower": random_tower, "control: shuffled pairs": shuffled}
    feats = {name: encode_volumes(m, test_set) for name, m in models.items()}
    prompt_sets = {"class-name pairs": CLASS_PROMPTS,
                   "disjoint wording": {c: (p[1], p[2]) for c, p in DISJOINT_PROMPTS.items()}}  # fmt: skip
    zs_rows = _zeroshot_rows(models, feats, prompt_sets)
    tr_feats, _ = encode_volumes(clip, VolumeTextSet(x_tr, t_tr, y_tr))
    probe = linear_probe_auroc((tr_feats[~val_mask], y_tr[~val_mask]), (tr_feats[val_mask], y_tr[val_mask]),
                               (feats["CLIP"][0], y_te), classes)  # fmt: skip
    zs_rows.append({"model": "CLIP + linear probe", "prompts": "(supervised)", "macro AUROC": probe})
    retrieval = retrieval_report(feats["CLIP"][0], encode_texts(clip, t_te), y_te)
    # Diagnostic (nothing selected on it): where the class-name pairs point in the joint space, against the
    # finding directions of the training reports and of the held-out volumes.
    alignment = zeroshot_alignment(clip, CLASS_PROMPTS, t_tr, y_tr, feats["CLIP"][0], y_te)
    (out / "alignment.json").write_text(
        json.dumps({"classes": classes, **{k: v.tolist() for k, v in alignment.items()}}, indent=1)
    )
    align_png = plot_alignment(alignment, classes, out / "alignment.png",
                               "CLIP, class-name prompt pairs: cosine between finding directions (held-out volumes)")  # fmt: skip
    # Diagnostic: the prompts scored against the training reports' own text (no volumes), with the language model
    # alone and in the trained joint space: how much of each prompt set the text side can find in the reports.
    text_side = {name: {space: report_text_zeroshot(clip, ps, t_tr, y_tr, projected=space == "joint space")
                        for space in ("encoder", "joint space")} for name, ps in prompt_sets.items()}  # fmt: skip
    (out / "text_side.json").write_text(json.dumps({"classes": classes, **text_side}, indent=1))
    write_table(zs_rows, out, "zeroshot")
    write_table(retrieval, out, "retrieval")
    times["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    # Initial weights seeded here, so the VAE and diffusion rows do not depend on how much random state the CLIP
    # training before them consumed.
    torch.manual_seed(ctx.seed)
    vae = VAEModule(channels=(16, 32, 32), latent_channels=4, kl_weight=1e-6)
    fit_vae(vae, x_tr, cfg["vae_steps"], cfg["vae_batch"], ctx.seed, ctx.progress, precision=precision)
    with torch.no_grad():
        recon = torch.cat([vae.reconstruct(x_te[i : i + 8]) for i in range(0, len(x_te), 8)]).clamp(0, 1)
    vae_psnr = psnr(recon, x_te)
    times["vae"] = time.perf_counter() - t

    t = time.perf_counter()
    latents, _ = vae.encode_latents(x_tr)
    contexts = text_context(clip, t_tr, CONTEXT_LENGTH)
    p = PRESETS["demo"]
    geometry = {"spacing": list(p.spacing), "size": list(p.size), "hu_window": list(p.hu_window),
                "out_range": list(p.out_range)}  # fmt: skip
    torch.manual_seed(ctx.seed)
    diff = LatentDiffusionModule(latent_channels=4, latent_shape=tuple(latents.shape[2:]), context_dim=128,
                                 context_length=CONTEXT_LENGTH, channels=(32, 64), attention_levels=(False, True),
                                 objective="rflow", cond_drop=0.1, ema_decay=0.995, lr=1e-3, geometry=geometry)  # fmt: skip
    fit_diffusion(diff, latents, contexts, cfg["diff_steps"], cfg["diff_batch"], ctx.seed, ctx.progress,
                  precision=precision)  # fmt: skip
    times["diffusion"] = time.perf_counter() - t

    t = time.perf_counter()
    n = min(cfg["n_generate"], len(t_te))
    prompts = list(t_te[:n])
    generated = generate_volumes(clip, vae, diff, prompts, seed=ctx.seed, guidance=3.0, steps=cfg["sample_steps"])
    fact = factual_correctness(clip, generated, y_te[:n], x_te[:n], y_te[:n], CLASS_PROMPTS)
    fid3d = fid(x_te[:n], generated, tower_extractor(clip))
    cscore = clip_score(clip, generated, prompts)
    cscore_real = clip_score(clip, x_te[:n], prompts)
    times["generation"] = time.perf_counter() - t
    figures = []
    for i in range(2):
        _, png = write_volume(generated[i], geometry, out / f"generated_{i}.nii.gz", title=prompts[i])
        figures.append(png)
    _, png = write_volume(x_te[0], geometry, out / "real_0.nii.gz", title="real phantom: " + prompts[0])
    figures += [png, align_png]

    zs = {(r["model"], r["prompts"]): r["macro AUROC"] for r in zs_rows}
    metrics = {
        "zero-shot macro AUROC": round(zs[("CLIP", "class-name pairs")], 4),
        "zero-shot macro AUROC (disjoint prompts)": round(zs[("CLIP", "disjoint wording")], 4),
        "control random tower AUROC": round(zs[("control: random volume tower", "class-name pairs")], 4),
        "control shuffled pairs AUROC": round(zs[("control: shuffled pairs", "class-name pairs")], 4),
        "linear probe AUROC": round(probe, 4),
        "report->volume R@5": round(retrieval["report->volume R@5"], 4),
        "volume->volume mAP": round(retrieval["volume->volume mAP (same labels)"], 4),
        "VAE PSNR (dB)": round(vae_psnr, 2),
        "factual correctness generated AUROC": round(fact["generated macro AUROC"], 4),
        "factual correctness real AUROC": round(fact["real macro AUROC"], 4),
        "factual correctness ratio": round(fact["ratio generated/real"], 4),
        "FID 3D (CLIP features)": round(fid3d, 4),
        "CLIP-score generated": round(cscore, 4),
        "CLIP-score real": round(cscore_real, 4),
        **{
            f"text side on training reports, {name}, {space}": round(r["macro_auroc"], 4)
            for name, d in text_side.items()
            for space, r in d.items()
        },
        **{f"seconds {k}": round(v, 1) for k, v in times.items()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    cols = ["model", "prompts", "macro AUROC", *classes]
    notes = [
        f"Phantom CT-RATE tree: {cfg['n_train']} train / {cfg['n_valid']} held-out volumes (40x40x32 at 8x8x10 mm, "
        "half stored LPS), read by the CT-RATE indexer, preprocessed to RAS 10 mm 32^3, HU window [-1000, 1000] -> [0, 1].",
        f"3D CLIP (ResNet3d {'-'.join(map(str, DEMO_CLIP['widths']))}, max over tokens + the finer stages' maxima; frozen MiniLM + trained MLP head), "
        f"{cfg['clip_steps']} steps; "
        "half of the training texts are one sentence of the report; the shuffled-pair control has the same schedule.",
        f"Training precision (CLIP, VAE, diffusion; DEMO_PRECISION={DEMO_PRECISION!r}): {precision}; evaluation in fp32.",
        "",
        format_rows(zs_rows, cols),
        "",
        "Prompt-pair alignment (alignment.png): diagonal of 'prompt vs volume' (the direction each class-name pair scores "
        "along against the held-out volumes' finding direction): "
        + ", ".join(f"{c} {float(alignment['prompt vs volume'][i, i]):.2f}" for i, c in enumerate(classes))
        + ".",
        "Text side (text_side.json; the prompts scored against the training reports' own text, no volumes), macro "
        "AUROC with MiniLM alone / in the trained joint space: "
        + "; ".join(
            f"{name} {d['encoder']['macro_auroc']:.3f} / {d['joint space']['macro_auroc']:.3f}"
            for name, d in text_side.items()
        )
        + ".",
        "",
        f"VAE (AutoencoderKL 16-32-32, 4 latent channels, x4) {cfg['vae_steps']} steps; latent scale factor "
        f"{float(vae.scale_factor):.3f} (1/std over all training posterior means). Diffusion: rectified flow, "
        f"{cfg['diff_steps']} steps, CFG w=3 with the shared null condition, {cfg['sample_steps']} sampling steps.",
    ]
    return DemoResult("ct3d", metrics, "zero-shot macro AUROC", target=0.85, figures=figures, notes=notes)
