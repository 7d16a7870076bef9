"""Registrations of vlp-ct3d (register only; lazy ``module:attr`` targets, no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    """Register vlp-ct3d towers, datasets, transforms and the demo under the ``ct3d/`` namespace."""
    registry.towers.register("ct3d/conv3d_small", "vlp_ct3d.models:Conv3dTower")
    registry.towers.register("ct3d/resnet3d", "vlp_ct3d.models:ResNet3dTower")
    registry.towers.register("ct3d/vit3d", "vlp_ct3d.models:ViT3dTower")
    registry.towers.register("ct3d/text", "vlp_ct3d.models:CTTextTower")
    registry.datasets.register("ct3d/ctrate", "vlp_ct3d.ctrate:ctrate_index")
    registry.datasets.register("ct3d/synthetic_ctrate", "vlp_ct3d.synth:make_fake_ctrate")
    registry.transforms.register("ct3d/load_ct", "vlp_ct3d.transforms:LoadCTd")
    registry.transforms.register("ct3d/preset", "vlp_ct3d.transforms:build_transforms")
    registry.demos.register("ct3d", "vlp_ct3d.demo:run_demo")
