"""Image towers for chest radiographs and dermatology photographs (presets over core's timm tower)."""

from __future__ import annotations

from vlp_core.towers import ImageTower

__all__ = ["cxr_vit_tiny", "derm_vit_tiny"]


def cxr_vit_tiny(embed_dim: int = 256, img_size: int = 224, pretrained_path: str | None = None) -> ImageTower:
    """ViT-tiny/16 on single-channel radiographs ``[B, 1, H, W]`` (grey images are never tiled to RGB)."""
    return ImageTower(
        "vit_tiny_patch16_224", embed_dim=embed_dim, in_chans=1, img_size=img_size, pretrained_path=pretrained_path
    )


def derm_vit_tiny(embed_dim: int = 256, img_size: int = 224, pretrained_path: str | None = None) -> ImageTower:
    """ViT-tiny/16 on RGB dermatology photographs ``[B, 3, H, W]``."""
    return ImageTower(
        "vit_tiny_patch16_224", embed_dim=embed_dim, in_chans=3, img_size=img_size, pretrained_path=pretrained_path
    )
