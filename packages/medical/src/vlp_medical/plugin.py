"""Registrations of vlp-medical (register only; no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    registry.towers.register("medical/cxr_vit_tiny", "vlp_medical.models:cxr_vit_tiny")
    registry.towers.register("medical/derm_vit_tiny", "vlp_medical.models:derm_vit_tiny")
