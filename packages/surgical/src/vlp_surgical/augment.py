"""Batched, seeded frame augmentations in plain torch ops (for the PeskaVLP/SimCLR two-view visual term).

:func:`augment_frames` applies a SimCLR-style view to float frames ``[N, 3, H, W]`` in ``[0, 1]``: a random resized
crop and a horizontal flip (one affine ``grid_sample``), then colour jitter (brightness, contrast, saturation, each
with its own random factor, applied with probability ``p_jitter``). Parameters are drawn from a CPU
``torch.Generator``, so a view is reproducible from its seed on any device, and they are drawn per *group*: all
frames of one clip share one crop / flip / jitter (a clip's view stays temporally coherent), as in PeskaVLP's
clip-level views. Hue jitter, grayscale and blur of the reference recipe are not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ViewParams", "apply_view", "augment_frames", "sample_view_params"]


@dataclass
class ViewParams:
    """Per-group view parameters; boxes in normalised ``[0, 1]`` image coordinates.

    Attributes:
        box: ``[G, 4]`` crop ``(x0, y0, width, height)``.
        flip: ``[G]`` bool, mirror horizontally.
        jitter: ``[G, 3]`` brightness, contrast, saturation factors (1 = unchanged).
    """

    box: Tensor
    flip: Tensor
    jitter: Tensor


def sample_view_params(
    n_groups: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
    p_jitter: float = 0.8,
    p_flip: float = 0.5,
) -> ViewParams:
    """Draw crop boxes (area fraction in ``scale``, aspect ratio log-uniform in ``ratio``, clipped to the image),
    flips and jitter factors (``1 ± jitter`` uniform; 1 with probability ``1 - p_jitter``) for ``n_groups`` groups."""
    u = torch.rand(n_groups, 8, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    x0 = (1 - w) * u[:, 2]
    y0 = (1 - h) * u[:, 3]
    flip = u[:, 4] < p_flip
    amp = torch.tensor(jitter, dtype=torch.float64)
    factors = 1 + amp * (2 * torch.rand(n_groups, 3, generator=generator, dtype=torch.float64) - 1)
    on = (u[:, 5] < p_jitter)[:, None]
    return ViewParams(torch.stack((x0, y0, w, h), 1), flip, torch.where(on, factors, torch.ones_like(factors)))


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def apply_view(frames: Tensor, params: ViewParams, groups: Tensor | None = None, size: int | None = None) -> Tensor:
    """Apply per-group :class:`ViewParams` to ``frames [N, 3, H, W]`` (float in ``[0, 1]``).

    Args:
        frames: frames to augment.
        params: from :func:`sample_view_params`.
        groups: ``[N]`` long group of each frame (default: each frame its own group).
        size: output side (square); default: keep ``H × W``.
    """
    n, _, h, w = frames.shape
    groups = torch.arange(n) if groups is None else groups.cpu()
    dt, dev = frames.dtype, frames.device
    box, flip, jit = params.box[groups].to(dev, dt), params.flip[groups].to(dev), params.jitter[groups].to(dev, dt)
    # Output x_o in [-1, 1] samples input at centre + half-extent * x_o (mirrored when flipped); align_corners=False.
    cx, cy = (2 * box[:, 0] + box[:, 2]) - 1, (2 * box[:, 1] + box[:, 3]) - 1
    sx = box[:, 2] * torch.where(flip, -1.0, 1.0).to(dt)
    theta = torch.zeros(n, 2, 3, dtype=dt, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, box[:, 3], cy
    out_hw = (size, size) if size else (h, w)
    grid = F.affine_grid(theta, [n, 3, *out_hw], align_corners=False)
    x = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    b, c, s = (jit[:, i, None, None, None] for i in range(3))
    x = (x * b).clamp(0, 1)
    x = ((x - _gray(x).mean((2, 3), keepdim=True)) * c + _gray(x).mean((2, 3), keepdim=True)).clamp(0, 1)
    g = _gray(x)
    return ((x - g) * s + g).clamp(0, 1)


def augment_frames(frames: Tensor, generator: torch.Generator, groups: Tensor | None = None, size: int | None = None,
                   **kwargs) -> Tensor:  # fmt: skip
    """One random view of ``frames [N, 3, H, W]`` (float, ``[0, 1]``); ``kwargs`` go to :func:`sample_view_params`."""
    n_groups = frames.shape[0] if groups is None else int(groups.max()) + 1
    return apply_view(frames, sample_view_params(n_groups, generator, **kwargs), groups, size)
