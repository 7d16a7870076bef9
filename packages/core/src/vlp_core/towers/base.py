"""The output type and base class shared by every tower (encoder) in vlp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vlp_core.config import Configurable

__all__ = ["ProjectionHead", "Tower", "TowerOutput"]


@dataclass
class TowerOutput:
    """What every tower returns.

    Attributes:
        embedding: global embedding ``[B, D]``, not normalised (losses normalise).
        tokens: local tokens ``[B, T, Dt]`` (patches, time steps, words) for fine-grained losses, or ``None``.
        mask: ``[B, T]`` bool, ``True`` where a token is valid, or ``None`` when all are.
        extras: tower-specific tensors (e.g. ``input_ids`` for captioning, ``attention_mask``).
    """

    embedding: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embedding.ndim != 2:
            raise ValueError(f"TowerOutput.embedding must be [B, D], got shape {tuple(self.embedding.shape)}")
        if self.tokens is not None and self.tokens.ndim != 3:
            raise ValueError(f"TowerOutput.tokens must be [B, T, D], got shape {tuple(self.tokens.shape)}")
        if self.mask is not None and self.tokens is not None and self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"mask {tuple(self.mask.shape)} does not match tokens {tuple(self.tokens.shape[:2])}")


class Tower(Configurable, nn.Module):
    """Base class: ``forward(x) -> TowerOutput``. Subclasses set ``output_dim`` (D) and ``token_dim`` (Dt or None)."""

    output_dim: int
    token_dim: int | None = None

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Trade compute for activation memory; towers without checkpointable blocks ignore it."""

    def set_required_outputs(self, required: set[str] | None) -> None:
        """Called by the Pretrainer with the outputs some loss term reads (``{"embedding", "tokens", "extras"}``;
        ``None`` = unknown, build everything). A tower drops heads whose output nobody reads, so that every
        parameter takes part in the loss (plain DDP fails on parameters without gradient)."""

    def export_assets(self, directory: str, name: str) -> dict[str, Any] | None:
        """Write files the tower needs besides its weights (e.g. a tokenizer) under ``directory``.

        Returns init-argument overrides pointing at them (relative to ``directory``), or ``None``.
        """
        return None


class ProjectionHead(nn.Module):
    """Maps encoder width to the shared embedding width.

    Args:
        in_dim: encoder width.
        out_dim: embedding width.
        kind: ``"linear"``, ``"mlp"`` (Linear-GELU-Linear, MERL/MELP style) or ``"none"`` (identity; needs
            ``in_dim == out_dim``).
        input_noise: in training mode only, add Gaussian noise to each input vector with standard deviation
            ``input_noise`` × that vector's own standard deviation (over its features) before projecting. A
            regulariser for a head trained on a frozen encoder: the head cannot key on small, wording-specific
            directions of the encoder's space, which paraphrases do not share. 0 = off; eval mode never adds noise.

    Shapes:
        ``x [..., in_dim]`` → ``[..., out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", input_noise: float = 0.0) -> None:
        super().__init__()
        if input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {input_noise}")
        self.input_noise = float(input_noise)
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
        elif kind == "none":
            if in_dim != out_dim:
                raise ValueError(f"projection 'none' needs in_dim == out_dim, got {in_dim} and {out_dim}")
            self.net = nn.Identity()
        else:
            raise ValueError(f"unknown projection {kind!r}; choose 'linear', 'mlp' or 'none'")

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * x.detach().std(-1, keepdim=True) * torch.randn_like(x)
        return self.net(x)


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over dim 1 of ``x`` ``[B, T, D]`` where ``mask`` ``[B, T]`` is true."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
