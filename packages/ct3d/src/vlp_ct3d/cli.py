"""``vlp-ct3d``: Lightning ``fit``/``validate``/``test`` (core's ``domain_cli``) plus ``phantoms``, ``fit-clip``,
``zeroshot``, ``retrieve``, ``fit-vae``, ``fit-diffusion``, ``generate``, ``evaluate-generation`` and ``demo``.

Data arguments are a CT-RATE root (``--root``) and split; volumes go through a named preset (``--preset``) with an
explicit ``--hu_mode`` (``already_hu`` for ``*_fixed`` volumes, ``apply_rescale`` for v1 volumes + metadata CSV)
and a persistent cache (``--cache``). Models are save_pretrained folders; a pipeline folder holds ``clip/``,
``vae/`` and ``diffusion/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _load(root: str, split: str, preset: str, hu_mode: str, cache: str | None, classes: list[str] | None) -> tuple:
    from vlp_ct3d.ctrate import ctrate_index
    from vlp_ct3d.train import load_split

    frame = ctrate_index(root, split, hu_mode=hu_mode)
    names = classes or [c for c in frame.attrs["labels"] if frame[c].sum() > 0]
    return (*load_split(frame, preset, cache, names, progress=True), names)


def phantoms(out: str, n_train: int = 400, n_valid: int = 150, seed: int = 0, storage: str = "fixed") -> str:
    """Write chest CT phantoms with reports in the CT-RATE layout.

    Args:
        out: output root.
        n_train: training volumes.
        n_valid: validation volumes.
        seed: seed.
        storage: fixed (int16 HU) or raw (v1-style, rescale in the metadata CSV).
    """
    from vlp_ct3d.synth import make_fake_ctrate

    return str(make_fake_ctrate(out, n_train, n_valid, seed=seed, storage=storage, progress=True))


def fit_clip(
    root: str, out: str, split: str = "train", preset: str = "demo", hu_mode: str = "already_hu",
    cache: str | None = None, volume_tower: str = "resnet", pooling: str | None = None, embed_dim: int = 128,
    widths: list[int] = [16, 32, 64], steps: int = 300,  # noqa: B006
    batch_size: int = 32, lr: float = 2e-3, sentence_prob: float = 0.5, seed: int = 0, text_proj: str = "linear",
    pyramid_detectors: int = 0, text_noise: float = 0.0, precision: str = "32-true",
) -> str:  # fmt: skip
    """Train the 3D CT–report CLIP and save it (save_pretrained folder).

    Args:
        root: CT-RATE root.
        out: output folder.
        split: training split.
        preset: preprocessing preset.
        hu_mode: already_hu or apply_rescale.
        cache: persistent preprocessing cache folder.
        volume_tower: resnet, vit or conv.
        pooling: token pooling of the volume tower (resnet: max (default), mean, meanmax, attn, pyramid; vit: cls
            (default), attn, mean).
        embed_dim: joint embedding width.
        widths: channels per stage of the resnet / conv volume tower.
        steps: optimiser steps.
        batch_size: batch size.
        lr: peak learning rate.
        sentence_prob: probability of training on one report sentence instead of the whole report.
        seed: seed.
        text_proj: text projection head on the frozen language model, linear or mlp.
        pyramid_detectors: linear detectors per finer stage with ``pooling: pyramid`` (0 = channel maxima).
        text_noise: training-time Gaussian noise on the language model's embeddings before the text head, relative
            to each embedding's std (0 = off).
        precision: Lightning precision: 32-true (default), bf16-mixed, ... or auto (bf16-mixed where the CPU/GPU
            computes bf16 natively, else 32-true).
    """
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.train import VolumeTextSet
    from vlp_ct3d.train import fit_clip as _fit

    x, texts, y, _, _ = _load(root, split, preset, hu_mode, cache, None)
    model = build_ct_clip(volume_tower, embed_dim, widths=tuple(widths), img_size=tuple(x.shape[2:]), pooling=pooling,
                          max_steps=steps, lr=lr, seed=seed, text_proj=text_proj, pyramid_detectors=pyramid_detectors,
                          text_noise=text_noise)  # fmt: skip
    _fit(
        model,
        VolumeTextSet(x, texts, y, augment=True, sentence_prob=sentence_prob, seed=seed),
        steps,
        batch_size,
        seed,
        progress=True,
        precision=precision,
    )
    model.save_pretrained(out)
    print(f"wrote {out}")
    return out


def _prompt_sets(classes: list[str], prompts_file: str | None) -> dict[str, dict]:
    sets = {"class-name pairs": {c: ([f"{c} is present."], [f"{c} is not present."]) for c in classes}}
    if prompts_file:
        data = json.loads(Path(prompts_file).read_text())  # {class: {"pos": [...], "neg": [...]}}
        sets["user prompts"] = {c: (v["pos"], v["neg"]) for c, v in data.items() if c in classes}
    return sets


def zeroshot(
    clip: str, root: str, split: str = "valid", preset: str = "demo", hu_mode: str = "already_hu",
    cache: str | None = None, classes: list[str] | None = None, prompts_file: str | None = None,
    n_boot: int = 1000, out: str = "zeroshot_results",
) -> list[dict]:  # fmt: skip
    """Zero-shot abnormality detection ("X is present." / "X is not present."): per-class and macro AUROC.

    Args:
        clip: CLIP save_pretrained folder.
        root: CT-RATE root.
        split: evaluated split.
        preset: preprocessing preset.
        hu_mode: already_hu or apply_rescale.
        cache: persistent cache folder.
        classes: label columns (default: those with a positive).
        prompts_file: optional JSON {class: {"pos": [...], "neg": [...]}} of extra prompt pairs.
        n_boot: bootstrap replicates of the macro CI.
        out: folder for zeroshot.csv/json.
    """
    from vlp_core.training import Pretrainer
    from vlp_ct3d.eval import encode_volumes, format_rows, write_table, zeroshot_scores, zeroshot_table
    from vlp_ct3d.train import VolumeTextSet

    model = Pretrainer.from_pretrained(clip).eval()
    x, texts, y, _, names = _load(root, split, preset, hu_mode, cache, classes)
    feats, labels = encode_volumes(model, VolumeTextSet(x, texts, y), progress=True)
    rows = []
    for set_name, prompts in _prompt_sets(names, prompts_file).items():
        scores, cls = zeroshot_scores(model, feats, prompts)
        res = zeroshot_table(scores, labels[:, [names.index(c) for c in cls]], cls, n_boot=n_boot)
        rows.append({"prompts": set_name, "macro AUROC": res["macro_auroc"], "CI low": res["ci_low"],
                     "CI high": res["ci_high"], **{c: v["auroc"] for c, v in res["per_class"].items()}})  # fmt: skip
    print(format_rows(rows, ["prompts", "macro AUROC", "CI low", "CI high", *names]))
    print("wrote", *write_table(rows, out, "zeroshot"))
    return rows


def retrieve(
    clip: str, root: str, split: str = "valid", preset: str = "demo", hu_mode: str = "already_hu",
    cache: str | None = None, out: str = "retrieval_results",
) -> dict[str, float]:  # fmt: skip
    """Report→volume / volume→report Recall@K, volume→volume Jaccard MAP@K (query excluded) and mAP.

    Args:
        clip: CLIP save_pretrained folder.
        root: CT-RATE root.
        split: evaluated split.
        preset: preprocessing preset.
        hu_mode: already_hu or apply_rescale.
        cache: persistent cache folder.
        out: folder for retrieval.csv/json.
    """
    from vlp_core.training import Pretrainer
    from vlp_ct3d.eval import encode_texts, encode_volumes, retrieval_report, write_table
    from vlp_ct3d.train import VolumeTextSet

    model = Pretrainer.from_pretrained(clip).eval()
    x, texts, y, _, _ = _load(root, split, preset, hu_mode, cache, None)
    feats, labels = encode_volumes(model, VolumeTextSet(x, texts, y), progress=True)
    res = retrieval_report(feats, encode_texts(model, texts), labels)
    for k, v in res.items():
        print(f"{k:40s} {v:.4f}")
    print("wrote", *write_table(res, out, "retrieval"))
    return res


def fit_vae(
    root: str, out: str, split: str = "train", preset: str = "demo", hu_mode: str = "already_hu",
    cache: str | None = None, channels: list[int] = [16, 32, 32], latent_channels: int = 4,  # noqa: B006
    adv_weight: float = 0.0, steps: int = 150, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
    perceptual_weight: float = 0.0, perceptual_network: str = "medicalnet_resnet10",
    perceptual_weights_path: str | None = None, perceptual_state_dict_key: str | None = None,
    checkpoint_dir: str | None = None, checkpoint_every: int | None = None, resume_from: str | None = None,
    precision: str = "32-true",
) -> str:  # fmt: skip
    """Train the 3D VAE (AutoencoderKL), estimate its latent scale factor and save it.

    Args:
        root: CT-RATE root.
        out: output folder (save_pretrained).
        split: training split.
        preset: preprocessing preset.
        hu_mode: already_hu or apply_rescale.
        cache: persistent cache folder.
        channels: widths per level.
        latent_channels: latent channels.
        adv_weight: patch-adversarial weight (0 = off).
        steps: generator steps (batches; the discriminator's steps are not counted).
        batch_size: batch size.
        lr: learning rate.
        seed: seed.
        perceptual_weight: 3D perceptual term weight (0 = off); needs perceptual_weights_path.
        perceptual_network: medicalnet_resnet10/18/34/50 (MedicalNet layout, built by MONAI, no download).
        perceptual_weights_path: local state-dict file (safetensors or torch.save) of that network.
        perceptual_state_dict_key: nested key in that file (MedicalNet checkpoints: state_dict).
        checkpoint_dir: write Lightning checkpoints (last.ckpt, and every checkpoint_every steps) here.
        checkpoint_every: checkpoint interval in Lightning steps (two per batch once the adversarial term is on;
            default: at the end only).
        resume_from: a checkpoint of the same command; the run continues exactly as if it had not stopped.
        precision: Lightning precision: 32-true (default), bf16-mixed, ... or auto (bf16-mixed where the CPU/GPU
            computes bf16 natively, else 32-true).
    """
    import torch

    from vlp_ct3d.gen import VAEModule
    from vlp_ct3d.pipeline import fit_vae as _fit

    torch.manual_seed(seed)  # the initial weights belong to the seeded run too
    vae = VAEModule(channels, latent_channels, adv_weight=adv_weight, lr=lr, perceptual_weight=perceptual_weight,
                    perceptual_network=perceptual_network, perceptual_weights_path=perceptual_weights_path,
                    perceptual_state_dict_key=perceptual_state_dict_key)  # fmt: skip
    vae.perceptual  # noqa: B018 — a missing or ill-fitting weights file fails before the data are loaded
    x = _load(root, split, preset, hu_mode, cache, None)[0]
    vae = _fit(vae, x, steps, batch_size, seed, True, checkpoint_dir, checkpoint_every, resume_from, precision)
    vae.save_pretrained(out)
    print(f"wrote {out} (scale factor {float(vae.scale_factor):.4f})")
    return out


def fit_diffusion(
    root: str, clip: str, vae: str, out: str, split: str = "train", preset: str = "demo",
    hu_mode: str = "already_hu", cache: str | None = None, objective: str = "rflow", context_length: int = 64,
    steps: int = 300, batch_size: int = 16, lr: float = 1e-3, seed: int = 0, checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None, resume_from: str | None = None, precision: str = "32-true",
) -> str:  # fmt: skip
    """Train the text-conditioned latent diffusion model; writes a pipeline folder (clip/, vae/, diffusion/).

    Args:
        root: CT-RATE root.
        clip: CLIP save_pretrained folder (its text tower gives the conditioning tokens).
        vae: VAE save_pretrained folder.
        out: pipeline output folder.
        split: training split.
        preset: preprocessing preset (its geometry is stored for NIfTI output).
        hu_mode: already_hu or apply_rescale.
        cache: persistent cache folder.
        objective: rflow or eps (DDPM/DDIM sampling).
        context_length: text tokens used for cross-attention.
        steps: optimiser steps.
        batch_size: batch size.
        lr: learning rate.
        seed: seed.
        checkpoint_dir: write Lightning checkpoints (last.ckpt, and every checkpoint_every steps) here.
        checkpoint_every: checkpoint interval in steps (default: at the end only).
        resume_from: a checkpoint of the same command; the run continues exactly as if it had not stopped.
        precision: Lightning precision: 32-true (default), bf16-mixed, ... or auto (bf16-mixed where the CPU/GPU
            computes bf16 natively, else 32-true).
    """
    import torch

    from vlp_core.training import Pretrainer
    from vlp_ct3d.gen import LatentDiffusionModule, VAEModule
    from vlp_ct3d.pipeline import fit_diffusion as _fit
    from vlp_ct3d.pipeline import text_context
    from vlp_ct3d.transforms import PRESETS

    clip_model = Pretrainer.from_pretrained(clip).eval()
    vae_model = VAEModule.from_pretrained(vae)
    x, texts, _, _, _ = _load(root, split, preset, hu_mode, cache, None)
    latents, _ = vae_model.encode_latents(x)
    ctx = text_context(clip_model, texts, context_length)
    p = PRESETS[preset]
    geometry = {"spacing": list(p.spacing), "size": list(p.size), "hu_window": list(p.hu_window),
                "out_range": list(p.out_range)}  # fmt: skip
    torch.manual_seed(seed)  # the initial weights belong to the seeded run too
    model = LatentDiffusionModule(latent_channels=latents.shape[1], latent_shape=tuple(latents.shape[2:]),
                                  context_dim=ctx.shape[-1], context_length=context_length, objective=objective,
                                  lr=lr, geometry=geometry)  # fmt: skip
    _fit(model, latents, ctx, steps, batch_size, seed, True, checkpoint_dir, checkpoint_every, resume_from, precision)
    out_p = Path(out)
    clip_model.save_pretrained(out_p / "clip")
    vae_model.save_pretrained(out_p / "vae")
    model.save_pretrained(out_p / "diffusion")
    print(f"wrote pipeline {out}")
    return out


def generate(
    model: str, out: str, prompt: str | None = None, prompts_file: str | None = None, seed: int = 0,
    guidance: float = 3.0, steps: int = 30, sampler: str | None = None, n_per_prompt: int = 1,
    decode_window: int | None = None, decode_overlap: float = 0.25,
) -> list[str]:  # fmt: skip
    """Generate CT volumes from text: NIfTI in HU (int16, RAS affine with the training spacing) + mid-slice PNGs.

    Args:
        model: pipeline folder (clip/, vae/, diffusion/).
        out: output folder.
        prompt: one prompt.
        prompts_file: text file, one prompt per line.
        seed: seed of the initial noise.
        guidance: classifier-free guidance weight.
        steps: sampling steps.
        sampler: rflow, ddim or ddpm (default: the model's).
        n_per_prompt: samples per prompt.
        decode_window: decode the latent in overlapping windows of this many latent voxels per axis (bounds the
            VAE decoder's memory; close to, not equal to, the full decode). None: decode at once.
        decode_overlap: fraction of a window shared with its neighbours (Gaussian blending), in [0, 1).
    """
    from vlp_ct3d.pipeline import generate_volumes, load_pipeline, write_volume

    prompts = ([prompt] if prompt else []) + (
        [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()] if prompts_file else []
    )
    if not prompts:
        raise SystemExit("vlp-ct3d generate: give --prompt or --prompts_file")
    clip, vae, diff = load_pipeline(model)
    prompts = [p for p in prompts for _ in range(n_per_prompt)]
    vols = generate_volumes(clip, vae, diff, prompts, seed=seed, guidance=guidance, steps=steps, sampler=sampler,
                            decode_window=decode_window, decode_overlap=decode_overlap)  # fmt: skip
    written = []
    for i, (v, p) in enumerate(zip(vols, prompts)):
        nii, png = write_volume(v, diff.geometry, Path(out) / f"sample_{i:03d}.nii.gz", title=p)
        written += [str(nii), str(png)]
        print(f"wrote {nii} and {png}")
    (Path(out) / "prompts.json").write_text(json.dumps(prompts, indent=2))
    return written


def evaluate_generation(
    model: str, root: str, split: str = "valid", preset: str = "demo", hu_mode: str = "already_hu",
    cache: str | None = None, n: int = 64, n_diversity: int = 4, seed: int = 0, guidance: float = 3.0,
    steps: int = 30, out: str = "generation_metrics",
) -> dict[str, float]:  # fmt: skip
    """FID (3D and 2.5D, CLIP image-tower features), CLIP-score, MS-SSIM diversity and factual correctness on
    volumes generated from held-out reports.

    Args:
        model: pipeline folder.
        root: CT-RATE root.
        split: split whose reports are the prompts.
        preset: preprocessing preset of the real volumes.
        hu_mode: already_hu or apply_rescale.
        cache: persistent cache folder.
        n: number of reports used.
        n_diversity: samples of the first prompt for MS-SSIM diversity.
        seed: seed.
        guidance: CFG weight.
        steps: sampling steps.
        out: folder for metrics.json.
    """
    from vlp_ct3d.genmetrics import clip_score, factual_correctness, fid, fid_25d, ms_ssim_diversity, tower_extractor
    from vlp_ct3d.pipeline import generate_volumes, load_pipeline

    clip, vae, diff = load_pipeline(model)
    x, texts, y, _, names = _load(root, split, preset, hu_mode, cache, None)
    n = min(n, len(texts))
    gen = generate_volumes(clip, vae, diff, texts[:n], seed=seed, guidance=guidance, steps=steps)
    ext = tower_extractor(clip)
    prompts = {c: ([f"{c} is present."], [f"{c} is not present."]) for c in names}
    div = generate_volumes(clip, vae, diff, [texts[0]] * n_diversity, seed=seed + 1, guidance=guidance, steps=steps)
    res = {"FID 3D": fid(x[:n], gen, ext), **{f"FID 2.5D {k}": v for k, v in fid_25d(x[:n], gen, ext).items()},
           "CLIP-score generated": clip_score(clip, gen, texts[:n]), "CLIP-score real": clip_score(clip, x[:n], texts[:n]),
           "MS-SSIM between samples of one prompt": ms_ssim_diversity(div),
           **{f"factual correctness {k}": v for k, v in factual_correctness(clip, gen, y[:n], x[:n], y[:n], prompts).items()}}  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "metrics.json").write_text(json.dumps(res, indent=2))
    for k, v in res.items():
        print(f"{k:45s} {v:.4f}")
    return res


def demo(out: str = "runs/demo-ct3d", data_dir: str | None = None, scale: str = "small", seed: int = 0) -> dict:
    """Run the embedded CT demo (same as `vlp demo ct3d`).

    Args:
        out: output folder.
        data_dir: cache for generated data.
        scale: small or large.
        seed: seed.
    """
    from vlp_core.demo import DemoContext, default_cache_dir
    from vlp_ct3d.demo import run_demo

    ctx = DemoContext(Path(out), Path(data_dir) if data_dir else default_cache_dir() / "demo" / "ct3d", scale, seed)
    res = run_demo(ctx)
    print(json.dumps(res.metrics, indent=2))
    print("\n".join(res.notes))
    return res.metrics


COMMANDS = {"phantoms": phantoms, "fit-clip": fit_clip, "zeroshot": zeroshot, "retrieve": retrieve,
            "fit-vae": fit_vae, "fit-diffusion": fit_diffusion, "generate": generate,
            "evaluate-generation": evaluate_generation, "demo": demo}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``vlp-ct3d``."""
    from vlp_core.cli import domain_cli

    result = domain_cli("vlp-ct3d", commands=COMMANDS, args=None if argv is None else list(argv),
                        trainer_defaults={"accelerator": "auto"})  # fmt: skip
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
