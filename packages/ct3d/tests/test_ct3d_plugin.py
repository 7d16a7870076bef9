"""vlp-ct3d registers with core and its towers follow the common forward API."""

from __future__ import annotations

import pytest
import torch

from vlp_core.registry import PluginRegistry, Registry
from vlp_core.testing import PluginConformance, TowerConformance


@pytest.fixture()
def registry() -> PluginRegistry:
    return PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo")))


class TestPluginConformance(PluginConformance):
    domain = "ct3d"


def test_conv3d_tower_shapes_and_gradients(registry: PluginRegistry) -> None:
    from vlp_ct3d.plugin import register

    register(registry)
    tower = registry.towers.build("ct3d/conv3d_small", embed_dim=24)
    out = tower(torch.randn(2, 1, 16, 32, 32))
    assert out.embedding.shape == (2, 24) and out.tokens.shape == (2, 2 * 4 * 4, 24)
    out.embedding.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tower.parameters())
    with pytest.raises(ValueError, match="volumes"):
        tower(torch.randn(2, 16, 32, 32))


class TestConv3dTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import Conv3dTower

        return Conv3dTower(widths=(4, 8), embed_dim=12)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))
