"""Registrations of vlp-ct3d (register only; no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    registry.towers.register("ct3d/conv3d_small", "vlp_ct3d.models:Conv3dTower")
