"""vlp-medical registers with core and its towers follow the common forward API."""

from __future__ import annotations

import pytest
import torch

from vlp_core.registry import PluginRegistry, Registry
from vlp_core.testing import PluginConformance, TowerConformance
from vlp_core.towers import TowerOutput


@pytest.fixture()
def registry() -> PluginRegistry:
    return PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo")))


class TestPluginConformance(PluginConformance):
    domain = "medical"


def test_cxr_tower_takes_single_channel_and_backpropagates(registry: PluginRegistry) -> None:
    from vlp_medical.plugin import register

    register(registry)
    tower = registry.towers.build("medical/cxr_vit_tiny", embed_dim=32, img_size=32)
    out = tower(torch.randn(2, 1, 32, 32))
    assert isinstance(out, TowerOutput) and out.embedding.shape == (2, 32) and out.tokens.shape == (2, 4, 32)
    (out.embedding.sum() + out.tokens.sum()).backward()
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)
    with pytest.raises(RuntimeError):
        tower(torch.randn(2, 3, 32, 32))  # RGB into a grey tower is an error, not silently reinterpreted


class TestCxrTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_medical.models import cxr_vit_tiny

        return cxr_vit_tiny(embed_dim=16, img_size=32)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(0))
