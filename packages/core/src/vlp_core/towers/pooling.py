"""Pooling of token sequences into a fixed number of vectors."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AttentionalPooler"]


class AttentionalPooler(nn.Module):
    """Learned queries attending over tokens (the CoCa / MELP pooler).

    Args:
        width: token width ``W``.
        out_dim: output width ``D`` (also the attention width).
        n_queries: number of learned queries ``Q``.
        heads: attention heads (must divide ``out_dim``).

    Shapes:
        ``forward(tokens [B, N, W], mask [B, N] bool True = valid, optional) -> [B, Q, D]``.
    """

    def __init__(self, width: int, out_dim: int, n_queries: int, heads: int = 4) -> None:
        super().__init__()
        if out_dim % heads:
            raise ValueError(f"heads ({heads}) must divide out_dim ({out_dim})")
        self.queries = nn.Parameter(torch.randn(n_queries, out_dim) * 0.02)
        self.kv = nn.Linear(width, out_dim)
        self.attn = nn.MultiheadAttention(out_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        kv = self.kv(tokens)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        padding = None if mask is None else ~mask.bool()
        return self.norm(self.attn(q, kv, kv, key_padding_mask=padding, need_weights=False)[0])
