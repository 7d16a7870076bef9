"""Registrations of vlp-surgical (register only; no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    registry.towers.register("surgical/frame_resnet18", "vlp_surgical.models:frame_resnet18")
