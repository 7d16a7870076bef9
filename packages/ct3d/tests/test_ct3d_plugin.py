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


def test_registered_towers_shapes_and_gradients(registry: PluginRegistry) -> None:
    from vlp_ct3d.plugin import register

    register(registry)
    tower = registry.towers.build("ct3d/conv3d_small", embed_dim=24)
    out = tower(torch.randn(2, 1, 16, 32, 32))
    assert out.embedding.shape == (2, 24) and out.tokens.shape == (2, 2 * 4 * 4, 24)
    out.embedding.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tower.parameters())
    with pytest.raises(ValueError, match="volumes"):
        tower(torch.randn(2, 16, 32, 32))
    res = registry.towers.build("ct3d/resnet3d", widths=(4, 8), embed_dim=8)
    assert res(torch.randn(1, 1, 16, 16, 16)).tokens.shape == (1, 4 * 4 * 4, 8)
    assert "ct3d" in registry.demos.list()


class TestConv3dTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import Conv3dTower

        return Conv3dTower(widths=(4, 8), embed_dim=12)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))


class TestResNet3dTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import ResNet3dTower

        return ResNet3dTower(widths=(4, 8), embed_dim=8, pooling="attn", heads=2)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))


class TestViT3dTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import ViT3dTower

        return ViT3dTower(img_size=(8, 8, 8), patch_size=(4, 4, 4), width=16, depth=2, heads=2, embed_dim=8)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))


def test_vit_tokens_exclude_cls_and_checkpointing_matches() -> None:
    from vlp_ct3d.models import ViT3dTower

    torch.manual_seed(0)
    vit = ViT3dTower(img_size=(8, 8, 8), patch_size=(4, 4, 4), width=16, depth=2, heads=2, embed_dim=8).train()
    x = torch.randn(2, 1, 8, 8, 8)
    a = vit(x)
    assert a.tokens.shape == (2, 8, 8)
    vit.set_gradient_checkpointing(True)
    torch.testing.assert_close(vit(x).embedding, a.embedding)
    with pytest.raises(ValueError, match="built for"):
        vit(torch.randn(1, 1, 8, 8, 16))
