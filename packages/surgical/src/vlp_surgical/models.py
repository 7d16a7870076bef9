"""Video towers for surgical procedures: a per-frame encoder with temporal pooling."""

from __future__ import annotations

import torch
from torch import Tensor

from vlp_core.towers import ProjectionHead, Tower, TowerOutput

__all__ = ["FrameAverageTower", "frame_resnet18"]


class FrameAverageTower(Tower):
    """Encodes each frame with a timm backbone and averages over time.

    Args:
        model_name: timm backbone for single frames.
        embed_dim: output width.

    Shapes:
        ``forward(video [B, T, C, H, W])`` → ``embedding [B, D]``, ``tokens [B, T, D]`` (one token per frame).
    """

    def __init__(self, model_name: str = "resnet18", embed_dim: int = 256) -> None:
        super().__init__()
        import timm

        # A pooled backbone only: per-patch tokens are not used here, so no unused (DDP-breaking) token head.
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0)
        self.proj = ProjectionHead(int(self.backbone.num_features), embed_dim)
        self.output_dim = self.token_dim = embed_dim

    def forward(self, video: Tensor) -> TowerOutput:
        if video.ndim != 5:
            raise ValueError(f"FrameAverageTower expects video [B, T, C, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        per_frame = self.proj(self.backbone(video.flatten(0, 1))).view(b, t, -1)
        return TowerOutput(per_frame.mean(1), per_frame, torch.ones(b, t, dtype=torch.bool, device=video.device))


def frame_resnet18(embed_dim: int = 256) -> FrameAverageTower:
    """ResNet-18 per frame, mean over time."""
    return FrameAverageTower("resnet18", embed_dim)
