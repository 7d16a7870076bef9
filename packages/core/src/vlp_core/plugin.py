"""Core's own registrations, loaded through the same ``vlp.plugins`` entry point as the domains."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    """Register core towers, losses, the shapes dataset and the core self-check demo (lazily)."""
    registry.towers.register("core/text", "vlp_core.towers:TextTower")
    registry.towers.register("core/image", "vlp_core.towers:ImageTower")
    registry.losses.register("core/clip", "vlp_core.losses:ClipLoss")
    registry.losses.register("core/siglip", "vlp_core.losses:SigLipLoss")
    registry.losses.register("core/multi_positive_clip", "vlp_core.losses:MultiPositiveClipLoss")
    registry.losses.register("core/caption", "vlp_core.losses:CaptionLoss")
    registry.losses.register("core/local_alignment", "vlp_core.losses:LocalAlignmentLoss")
    registry.datasets.register("core/shapes", "vlp_core.toy:ShapesDataset")
    registry.demos.register("core", "vlp_core.toy:run_core_demo")
