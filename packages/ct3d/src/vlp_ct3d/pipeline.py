"""Text-to-CT pipeline: fit the VAE, cache latents (posterior means), fit the diffusion model on CLIP text tokens,
generate volumes, write them as NIfTI in HU (int16, RAS affine with the preset's spacing) plus mid-slice PNGs.

A pipeline folder holds ``clip/`` (CLIP Pretrainer), ``vae/`` and ``diffusion/`` (safetensors + JSON each).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlp_ct3d.gen import LatentDiffusionModule, VAEModule

__all__ = ["fit_vae", "fit_diffusion", "text_context", "generate_volumes", "write_volume", "load_pipeline",
           "output_affine", "psnr"]  # fmt: skip


class _Dict(torch.utils.data.Dataset):
    def __init__(self, **tensors: Tensor) -> None:
        self.t = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.t.items()}


def _fit(
    model: Any, max_steps: int, batch_size: int, seed: int, progress: bool, checkpoint_dir: str | Path | None,
    checkpoint_every: int | None, resume_from: str | Path | None, precision: str | None = None, **tensors: Tensor,
) -> None:  # fmt: skip
    """Lightning fit on in-memory tensors; the order depends only on ``(seed, epoch)`` (core's resumable loader), so a
    run resumed from one of its checkpoints continues exactly where it stopped (RNG states from core's VlpModule)."""
    import lightning as L

    from vlp_core.training import PairedDataModule, resolve_precision

    L.seed_everything(seed, workers=True, verbose=False)
    callbacks = []
    if checkpoint_dir is not None:
        every = checkpoint_every or max_steps
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=str(checkpoint_dir), every_n_train_steps=every,
                                                             save_top_k=-1, save_last=True))  # fmt: skip
    trainer = L.Trainer(accelerator="auto", devices=1, max_steps=max_steps, max_epochs=-1, logger=False,
                        enable_checkpointing=bool(callbacks), callbacks=callbacks, enable_progress_bar=progress,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        precision=resolve_precision(precision))  # fmt: skip
    data = PairedDataModule(batch_size=batch_size, seed=seed, train_set=_Dict(**tensors))
    trainer.fit(model, data, ckpt_path=None if resume_from is None else str(resume_from))


def fit_vae(
    vae: VAEModule, volumes: Tensor, max_steps: int, batch_size: int = 4, seed: int = 0, progress: bool = False,
    checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
    resume_from: str | Path | None = None, precision: str | None = None,
) -> VAEModule:  # fmt: skip
    """Train the VAE on windowed volumes ``[N, 1, D, H, W]``, then estimate its latent scale factor over all of them.

    Args:
        vae: the module to train.
        volumes: training volumes.
        max_steps: generator steps (batches). Lightning's global step counts every optimiser step, two per batch
            once the adversarial term is on; that conversion is made here (:meth:`VAEModule.lightning_steps`).
        batch_size: batch size.
        seed: seed of the run (initial RNG state and data order).
        progress: progress bar.
        checkpoint_dir: write Lightning checkpoints here (``last.ckpt`` and every ``checkpoint_every`` steps).
        checkpoint_every: checkpoint interval in Lightning steps (default: only at the end).
        resume_from: a checkpoint of this run; training continues exactly as if it had not stopped.
        precision: Lightning's precision (``None`` = ``"32-true"``, ``"bf16-mixed"``, ...) or ``"auto"`` (bf16 mixed
            precision where the hardware has native bf16, else fp32; :func:`vlp_core.training.resolve_precision`).
    """
    steps = vae.lightning_steps(max_steps)
    _fit(vae, steps, batch_size, seed, progress, checkpoint_dir, checkpoint_every, resume_from, precision,
         image=volumes)  # fmt: skip
    vae.estimate_scale_factor(volumes)
    return vae.eval()


@torch.no_grad()
def text_context(clip_model: Any, texts: Sequence[str], length: int, batch_size: int = 64) -> Tensor:
    """CLIP text-tower token sequences ``[N, length, E]`` (projected, padding zeroed) for cross-attention."""
    tower = clip_model.towers["text"]
    tower.eval()
    out = [tower.token_sequence(list(texts[i : i + batch_size]), length)[0].float().cpu()
           for i in range(0, len(texts), batch_size)]  # fmt: skip
    return torch.cat(out)


def fit_diffusion(
    model: LatentDiffusionModule, latents: Tensor, contexts: Tensor, max_steps: int, batch_size: int = 16,
    seed: int = 0, progress: bool = False, checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None, resume_from: str | Path | None = None, precision: str | None = None,
) -> LatentDiffusionModule:  # fmt: skip
    """Train on cached scaled latents ``[N, C, d, h, w]`` and text tokens ``[N, L, E]``; checkpointing, exact
    resume and ``precision`` as in :func:`fit_vae`."""
    _fit(model, max_steps, batch_size, seed, progress, checkpoint_dir, checkpoint_every, resume_from, precision,
         latent=latents, context=contexts)  # fmt: skip
    return model.eval()


@torch.no_grad()
def generate_volumes(
    clip_model: Any, vae: VAEModule, diffusion: LatentDiffusionModule, prompts: Sequence[str], seed: int = 0,
    guidance: float = 3.0, steps: int = 30, sampler: str | None = None, batch_size: int = 8,
    decode_window: int | Sequence[int] | None = None, decode_overlap: float = 0.25,
) -> Tensor:  # fmt: skip
    """Prompts → windowed volumes ``[N, 1, D, H, W]`` (clamped to the preset's output range).

    ``decode_window`` (latent voxels) decodes in overlapping windows (:meth:`VAEModule.decode`) to bound memory.
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = diffusion.geometry.get("out_range", (0.0, 1.0))
    ctx = text_context(clip_model, prompts, diffusion.context_length)
    vae.eval()
    outs = []
    for i in range(0, len(prompts), batch_size):
        z = diffusion.sample(ctx[i : i + batch_size].to(diffusion.device), guidance=guidance, steps=steps,
                             sampler=sampler, generator=g)  # fmt: skip
        vol = vae.decode(z / vae.scale_factor, window=decode_window, overlap=decode_overlap)
        outs.append(vol.clamp(lo, hi).cpu())
    return torch.cat(outs)


def output_affine(geometry: dict[str, Any]) -> np.ndarray:
    """RAS affine with the preset's spacing, grid centred on the world origin."""
    sp = np.asarray(geometry["spacing"], dtype=np.float64)
    size = np.asarray(geometry["size"], dtype=np.float64)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(size - 1) / 2 * sp
    return affine


def write_volume(volume: Tensor, geometry: dict[str, Any], path: str | Path, title: str = "") -> tuple[Path, Path]:
    """Windowed volume ``[1, D, H, W]`` → NIfTI in HU (int16) + PNG of the axial/coronal/sagittal mid-slices."""
    from vlp_ct3d.io import save_nifti
    from vlp_ct3d.plot import plot_mid_slices
    from vlp_ct3d.transforms import window_to_hu

    hu = window_to_hu(volume[0].float().numpy(), tuple(geometry["hu_window"]), tuple(geometry["out_range"]))
    path = Path(path)
    nii = save_nifti(hu, output_affine(geometry), path)
    png = plot_mid_slices(hu, geometry["spacing"], path.with_suffix("").with_suffix(".png"), title=title)
    return nii, png


def load_pipeline(directory: str | Path, map_location: str = "cpu") -> tuple[Any, VAEModule, LatentDiffusionModule]:
    """Load ``clip/``, ``vae/`` and ``diffusion/`` from a pipeline folder (no pickle)."""
    from vlp_core.training import Pretrainer

    d = Path(directory)
    clip = Pretrainer.from_pretrained(d / "clip", map_location=map_location).eval()
    vae = VAEModule.from_pretrained(d / "vae", map_location=map_location)
    diff = LatentDiffusionModule.from_pretrained(d / "diffusion", map_location=map_location)
    return clip, vae, diff  # type: ignore[return-value]


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) over the whole set."""
    mse = torch.mean((x.float() - y.float()) ** 2)
    return float(10 * torch.log10(data_range**2 / mse.clamp_min(1e-12)))
