"""vlp-surgical registers with core and its towers follow the common forward API."""

from __future__ import annotations

import pytest
import torch

from vlp_core.registry import PluginRegistry, Registry
from vlp_core.testing import PluginConformance, TowerConformance


@pytest.fixture()
def registry() -> PluginRegistry:
    return PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo")))


class TestPluginConformance(PluginConformance):
    domain = "surgical"


def test_frame_tower_pools_over_time(registry: PluginRegistry) -> None:
    from vlp_surgical.plugin import register

    register(registry)
    tower = registry.towers.build("surgical/frame_resnet18", embed_dim=16).eval()
    video = torch.randn(2, 3, 3, 32, 32)
    out = tower(video)
    assert out.embedding.shape == (2, 16) and out.tokens.shape == (2, 3, 16)
    torch.testing.assert_close(out.embedding, out.tokens.mean(1))
    # Each frame is encoded independently: frame 0 of the output depends only on frame 0 of the input.
    video2 = video.clone()
    video2[:, 1:] = 0
    torch.testing.assert_close(tower(video2).tokens[:, 0], out.tokens[:, 0])
    with pytest.raises(ValueError, match="video"):
        tower(torch.randn(2, 3, 32, 32))


class TestFrameTowerConformance(TowerConformance):
    def make_tower(self):
        from vlp_surgical.models import FrameAverageTower

        return FrameAverageTower("resnet10t", embed_dim=16)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
