"""Metrics of generated volumes: FID (3D features and 2.5D per-plane slabs) with a pluggable feature extractor,
CLIP-score with our CLIP, MS-SSIM diversity between samples of one prompt, and factual correctness (our zero-shot
classifier's AUROC on generated volumes vs on real ones).

Default feature extractor: our own 3D CLIP image tower (no download is possible). The 2.5D FID feeds the same
tower thin slabs (``slab`` slices around the centre of each plane, padded with air to the tower's input size), one
FID per plane, averaged. A user may pass any callable ``volumes [B, 1, D, H, W] -> features [B, F]`` (e.g. a
MedicalNet built from local weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["frechet_distance", "fid", "fid_25d", "clip_score", "ms_ssim_diversity", "factual_correctness",
           "tower_extractor"]  # fmt: skip

Extractor = Callable[[Tensor], Tensor]


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^{1/2}) of two feature sets ``[N, F]`` (unbiased covariances)."""
    from scipy import linalg

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets [N>=2, F] of equal F, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as in pytorch-fid
        eps = np.eye(sa.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sa + eps) @ (sb + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def tower_extractor(clip_model: Any, batch_size: int = 16) -> Extractor:
    """``volumes -> L2-normalised image-tower embeddings`` of a CLIP ``Pretrainer`` (eval mode, no grad)."""
    tower = clip_model.towers["image"]

    @torch.no_grad()
    def extract(volumes: Tensor) -> Tensor:
        tower.eval()
        dev = next(tower.parameters()).device
        out = [
            tower(volumes[i : i + batch_size].to(dev)).embedding.float().cpu()
            for i in range(0, len(volumes), batch_size)
        ]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    return extract


def fid(real: Tensor, fake: Tensor, extractor: Extractor) -> float:
    """3D FID: Fréchet distance between ``extractor`` features of real and generated volumes ``[N, 1, D, H, W]``."""
    return frechet_distance(extractor(real), extractor(fake))


def _slabs(volumes: Tensor, axis: int, slab: int, n_slabs: int, fill: float) -> Tensor:
    """``n_slabs`` slabs of ``slab`` slices around the centre along spatial ``axis``, padded back to full size."""
    size = volumes.shape[2 + axis]
    centres = np.linspace(size * 0.3, size * 0.7, n_slabs).round().astype(int)
    out = []
    for c in centres:
        lo = int(np.clip(c - slab // 2, 0, size - slab))
        idx = [slice(None)] * 5
        idx[2 + axis] = slice(lo, lo + slab)
        piece = volumes[tuple(idx)]
        pad = torch.full_like(volumes, fill)
        start = (size - slab) // 2
        idx[2 + axis] = slice(start, start + slab)
        pad[tuple(idx)] = piece
        out.append(pad)
    return torch.cat(out)


def fid_25d(
    real: Tensor, fake: Tensor, extractor: Extractor, slab: int = 4, n_slabs: int = 3, fill: float = 0.0
) -> dict[str, float]:
    """Per-plane FID on thin slabs (axial = along S, coronal = along A, sagittal = along R; RAS volumes) + mean."""
    planes = {"sagittal": 0, "coronal": 1, "axial": 2}
    out = {
        name: frechet_distance(
            extractor(_slabs(real, ax, slab, n_slabs, fill)), extractor(_slabs(fake, ax, slab, n_slabs, fill))
        )  # fmt: skip
        for name, ax in planes.items()
    }
    out["mean"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def clip_score(clip_model: Any, volumes: Tensor, texts: Sequence[str], batch_size: int = 16) -> float:
    """Mean cosine similarity between each volume and its prompt in our CLIP's joint space."""
    from vlp_ct3d.eval import encode_texts

    v = tower_extractor(clip_model, batch_size)(volumes)
    t = torch.nn.functional.normalize(encode_texts(clip_model, list(texts)), dim=-1)
    return float((v * t).sum(-1).mean())


def _ms_ssim_metric(shape: Sequence[int], data_range: float) -> Any:
    from monai.metrics import MultiScaleSSIMMetric

    # MONAI's defaults (5 scales, kernel 11) need every axis >= 16 * 11; fit the scales/kernel to small volumes.
    smallest = min(shape)
    kernel = 3 if smallest < 64 else 7
    levels = 1
    while levels < 5 and smallest // (2**levels) >= kernel:
        levels += 1
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:levels])
    return MultiScaleSSIMMetric(spatial_dims=3, data_range=data_range, kernel_size=kernel,
                                weights=tuple((weights / weights.sum()).tolist()))  # fmt: skip


def ms_ssim_diversity(samples: Tensor, data_range: float = 1.0) -> float:
    """Mean MS-SSIM over all pairs of samples ``[K, 1, D, H, W]`` of one prompt (lower = more diverse)."""
    if len(samples) < 2:
        raise ValueError("MS-SSIM diversity needs at least two samples of a prompt")
    metric = _ms_ssim_metric(samples.shape[2:], data_range)
    i, j = torch.triu_indices(len(samples), len(samples), 1)
    return float(metric(samples[i].float(), samples[j].float()).mean())


def factual_correctness(
    clip_model: Any,
    generated: Tensor,
    prompted_labels: Tensor,
    real: Tensor,
    real_labels: Tensor,
    prompts: dict[str, tuple[Sequence[str], Sequence[str]]],
) -> dict[str, float]:
    """Our zero-shot classifier on generated volumes (labels = the findings asked for in the prompt) vs on real
    volumes (their labels): macro AUROC of each and their ratio."""
    from vlp_ct3d.eval import zeroshot_scores, zeroshot_table

    out = {}
    for name, vols, labels in (("generated", generated, prompted_labels), ("real", real, real_labels)):
        feats = tower_extractor(clip_model)(vols)
        scores, classes = zeroshot_scores(clip_model, feats, prompts)
        out[f"{name} macro AUROC"] = zeroshot_table(scores, labels, classes, n_boot=0)["macro_auroc"]
    out["ratio generated/real"] = out["generated macro AUROC"] / out["real macro AUROC"]
    return out
