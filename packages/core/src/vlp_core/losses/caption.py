"""Captioning loss (CoCa-style): a small causal text decoder cross-attending to a tower's token states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable

__all__ = ["CaptionDecoder", "CaptionLoss", "caption_loss"]


class CaptionDecoder(nn.Module):
    """Causal transformer decoder over token ids with cross-attention to a memory of tokens (pre-norm, tied output).

    Args:
        vocab_size: tokenizer vocabulary size ``V``.
        width: decoder width ``W`` (= the memory's token width).
        layers: decoder layers.
        heads: attention heads.
        max_length: longest caption in tokens.

    Shapes:
        ``forward(ids [B, L], memory [B, N, W], key_padding [B, L] bool True = pad) -> logits [B, L, V]``.
    """

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, max_length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Parameter(torch.zeros(1, max_length, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerDecoderLayer(
            width, heads, 4 * width, 0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)
        self.max_length = max_length

    def forward(self, ids: Tensor, memory: Tensor, key_padding: Tensor | None = None) -> Tensor:
        n = ids.shape[1]
        if n > self.max_length:
            raise ValueError(f"caption of {n} tokens exceeds the decoder context {self.max_length}")
        x = self.embed(ids) + self.pos[:, :n]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=ids.device), diagonal=1)
        y = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=key_padding)
        return self.norm(y) @ self.embed.weight.T  # tied output projection


def caption_loss(logits: Tensor, ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Next-token cross-entropy over real (non-padding) target tokens.

    Args:
        logits: ``[B, L-1, V]`` predictions for positions ``1..L-1``.
        ids: ``[B, L]`` token ids.
        attention_mask: ``[B, L]`` 1 for real tokens.

    Returns:
        Mean cross-entropy over the real target tokens.
    """
    target = ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


class CaptionLoss(Configurable, nn.Module):
    """Captioning term: predict the text's tokens from the token states of another field (teacher forcing).

    Used by MELP's token level (ECG tokens → report) and CoCa-style image captioning. The term reads
    ``outputs[source].tokens`` ``[B, N, W]`` and ``outputs[text].extras["input_ids"/"attention_mask"]``.

    Args:
        vocab_size: tokenizer vocabulary size ``V``.
        width: decoder width (= the source tower's ``token_dim``).
        layers / heads: decoder size.
        pad_id: padding id of the tokenizer (kept for configs; padding is read from the attention mask).
        max_length: decoder context.
        max_captions: caption only the first ``max_captions`` samples of each (shuffled) batch: the vocabulary
            projection dominates the cost on CPU and the loss stays an unbiased estimate. ``None`` = all.
        source / text: batch fields (tower outputs) to read.
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        pad_id: int = 0,
        max_length: int = 128,
        max_captions: int | None = None,
        source: str = "image",
        text: str = "text",
    ) -> None:
        super().__init__()
        self.decoder = CaptionDecoder(vocab_size, width, layers, heads, max_length)
        self.pad_id, self.source, self.text = pad_id, source, text
        self.max_captions = max_captions

    def needs(self) -> dict[str, set[str]]:
        """Tower outputs this loss reads, per field (the Pretrainer builds only what some term needs)."""
        return {self.source: {"tokens"}, self.text: {"extras"}}

    def forward(self, tokens: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Args: tokens ``[B, N, W]``; input_ids, attention_mask ``[B, L]``. Returns ``{"loss", "ppl"}``."""
        ids = input_ids[:, :-1]
        pad = attention_mask[:, :-1] == 0
        logits = self.decoder(ids, tokens, pad)
        loss = caption_loss(logits, input_ids, attention_mask)
        return {"loss": loss, "ppl": loss.detach().exp()}

    def forward_outputs(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        for field in (self.source, self.text):
            if field not in outputs:
                raise KeyError(f"CaptionLoss reads field {field!r}; outputs have {sorted(outputs)}")
        src, txt = outputs[self.source], outputs[self.text]
        if src.tokens is None:
            raise ValueError(f"CaptionLoss needs token states from field {self.source!r}, but its tower gave none")
        k = src.tokens.shape[0] if self.max_captions is None else min(self.max_captions, src.tokens.shape[0])
        ids, att = txt.extras["input_ids"][:k], txt.extras["attention_mask"][:k]
        n = int(att.sum(1).max())  # drop all-padding columns of the subset
        return self(src.tokens[:k], ids[:, :n], att[:, :n])
