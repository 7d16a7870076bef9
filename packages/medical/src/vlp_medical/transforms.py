"""Image preprocessing: fixed, documented resize/crop/normalisation (BenchX-style), stored with each checkpoint.

Normalisation constants differ per reference model (BenchX 0.4978/0.2449, MedCLIP 0.5863/0.2795, ImageNet); the
transform is a :class:`~vlp_core.config.Configurable` so the constants travel in the checkpoint config instead of
being re-typed (and silently changed) at evaluation time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlp_core.config import Configurable

__all__ = ["BENCHX_MEAN_STD", "CxrTransform"]

BENCHX_MEAN_STD = (0.4978, 0.2449)


class CxrTransform(Configurable):
    """``[H, W]`` (or ``[H, W, 3]``) float image in ``[0, 1]`` -> normalised tensor ``[C, size, size]``.

    Eval: resize the shorter side to ``size`` (antialiased bilinear) and centre-crop (BenchX ``Resize + CenterCrop``).
    Train (``train=True``): random resized crop with scale ``crop_scale`` and, if ``hflip``, horizontal flips,
    drawn from the given ``torch.Generator`` so augmentation is reproducible. Horizontal flips are off by default
    for chest radiographs because laterality (left/right findings, heart position) is part of the label.

    Args:
        size: output side.
        mean: normalisation mean (per channel or one value).
        std: normalisation std.
        channels: 1 (grey) or 3 (grey repeated / RGB photographs).
        crop_scale: area fraction range of the random crop.
        hflip: random horizontal flips in training.
    """

    def __init__(
        self,
        size: int = 224,
        mean: float | tuple[float, ...] = BENCHX_MEAN_STD[0],
        std: float | tuple[float, ...] = BENCHX_MEAN_STD[1],
        channels: int = 1,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        hflip: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.size, self.channels, self.crop_scale, self.hflip = int(size), channels, tuple(crop_scale), hflip
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def _to_chw(self, image: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if x.ndim == 2:
            x = x[None]
        elif x.ndim == 3 and x.shape[-1] in (1, 3):
            x = x.permute(2, 0, 1)
        else:
            raise ValueError(f"expected an image [H, W] or [H, W, C], got shape {tuple(x.shape)}")
        if x.shape[0] != self.channels:
            if x.shape[0] == 1 and self.channels == 3:
                x = x.expand(3, -1, -1)
            else:
                raise ValueError(f"image has {x.shape[0]} channels, the transform expects {self.channels}")
        return x

    def __call__(
        self, image: np.ndarray | Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        x = self._to_chw(image)
        h, w = x.shape[-2:]
        if train:
            g = generator
            area = h * w * float(torch.empty(1).uniform_(*self.crop_scale, generator=g))
            side = int(min(h, w, round(area**0.5)))
            top = int(torch.randint(0, h - side + 1, (1,), generator=g))
            left = int(torch.randint(0, w - side + 1, (1,), generator=g))
            x = x[:, top : top + side, left : left + side]
            if self.hflip and bool(torch.rand(1, generator=g) < 0.5):
                x = x.flip(-1)
        else:
            short = min(h, w)
            top, left = (h - short) // 2, (w - short) // 2
            x = x[:, top : top + short, left : left + short]
        if x.shape[-1] != self.size:
            x = F.interpolate(
                x[None], size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )[0]
        return (x - self.mean) / self.std

    def config_dict(self) -> dict[str, Any]:
        return dict(self._init_args)  # type: ignore[attr-defined]
