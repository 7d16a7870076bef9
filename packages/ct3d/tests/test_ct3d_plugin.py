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


class TestResNet3dMaxPoolConformance(TestResNet3dTowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import ResNet3dTower

        return ResNet3dTower(widths=(4, 8), embed_dim=8, pooling="meanmax")


class TestResNet3dPyramidConformance(TestResNet3dTowerConformance):
    def make_tower(self):
        from vlp_ct3d.models import ResNet3dTower

        return ResNet3dTower(widths=(4, 8), embed_dim=8, pooling="pyramid", pyramid_detectors=2)


@pytest.mark.parametrize("pooling", ["mean", "max", "meanmax"])
def test_resnet_pooling_matches_brute_force_over_tokens(pooling: str) -> None:
    from vlp_ct3d.models import ResNet3dTower

    torch.manual_seed(0)
    tower = ResNet3dTower(widths=(4, 8), embed_dim=6, pooling=pooling).eval()
    out = tower(torch.randn(3, 1, 8, 8, 8))
    tok = out.tokens  # [3, 8, 6]
    expected = {
        "mean": lambda: tok.mean(1),
        "max": lambda: torch.tensor([[max(tok[b, :, d].tolist()) for d in range(6)] for b in range(3)]),
        "meanmax": lambda: tower.pool_proj(torch.cat([tok.mean(1), tok.amax(1)], -1)),
    }[pooling]()
    torch.testing.assert_close(out.embedding, expected.to(out.embedding.dtype))
    # A single bright voxel moves the max-pooled embedding of that volume only (no cross-batch mixing).
    x = torch.zeros(2, 1, 8, 8, 8)
    y = x.clone()
    y[0, 0, 3, 3, 3] = 5.0
    a, b = tower(x).embedding, tower(y).embedding
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="pooling"):
        ResNet3dTower(widths=(4, 8), embed_dim=6, pooling="sum")


@pytest.mark.parametrize("detectors", [0, 3])
def test_resnet_pyramid_pooling_matches_brute_force_over_every_stage(detectors: int) -> None:
    from vlp_ct3d.models import ResNet3dTower

    torch.manual_seed(0)
    tower = ResNet3dTower(widths=(4, 8, 8), embed_dim=6, pooling="pyramid", pyramid_detectors=detectors).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    out = tower(x)
    # By hand: stem, stages, then per finer stage norm → GELU → detectors at every position → max over positions.
    maps, h = [], tower.stem(x)
    for stage in tower.stages:
        h = stage(h)
        maps.append(h)
    peaks = []
    for norm, det, f in zip(tower.finer_norms, tower.finer_detectors, maps[:2]):
        g = torch.nn.functional.gelu(norm(f))  # [2, C, d, h, w]
        per_pos = [
            det(g[:, :, i, j, k]) for i in range(g.shape[2]) for j in range(g.shape[3]) for k in range(g.shape[4])
        ]
        peaks.append(torch.stack(per_pos, 0).amax(0))
    assert peaks[0].shape == (2, detectors or 4) and peaks[1].shape == (2, detectors or 8)
    expected = out.tokens.amax(1) + tower.finer_proj(torch.cat(peaks, 1))
    torch.testing.assert_close(out.embedding, expected)
    # The finer path matters: without it the embedding is the plain token max.
    assert not torch.allclose(out.embedding, out.tokens.amax(1))
    with pytest.raises(ValueError, match="pyramid_detectors"):
        ResNet3dTower(widths=(4, 8), pooling="pyramid", pyramid_detectors=-1)


def test_build_ct_clip_default_pooling() -> None:
    from vlp_ct3d.models import build_ct_clip

    assert build_ct_clip(embed_dim=8, widths=(4, 8), seed=0).towers["image"].pooling == "max"
    assert build_ct_clip(embed_dim=8, widths=(4, 8), seed=0, pooling="cls").towers["image"].pooling == "attn"
    vit = build_ct_clip("vit", embed_dim=8, img_size=(8, 8, 8), seed=0).towers["image"]
    assert vit.pooling == "cls"
