"""Volume towers for 3D CT."""

from __future__ import annotations

from torch import Tensor, nn

from vlp_core.towers import Tower, TowerOutput

__all__ = ["Conv3dTower"]


class Conv3dTower(Tower):
    """A small 3D CNN: ``depth`` stride-2 conv blocks, tokens = final feature-map positions.

    Args:
        in_chans: input channels (1 for CT in HU windows).
        widths: channels of each stride-2 block.
        embed_dim: output width.

    Shapes:
        ``forward(volume [B, C, D, H, W])`` → ``embedding [B, E]``, ``tokens [B, D'·H'·W', E]``.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64), embed_dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for w in widths:
            layers += [nn.Conv3d(c, w, 3, stride=2, padding=1), nn.GroupNorm(min(8, w), w), nn.GELU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(c, embed_dim)
        self.output_dim = self.token_dim = embed_dim

    def forward(self, volume: Tensor) -> TowerOutput:
        if volume.ndim != 5:
            raise ValueError(f"Conv3dTower expects volumes [B, C, D, H, W], got shape {tuple(volume.shape)}")
        tokens = self.proj(self.body(volume).flatten(2).transpose(1, 2))
        return TowerOutput(tokens.mean(1), tokens)
