"""MELP token- and beat-level losses (the rhythm level is core's :class:`~vlp_core.losses.ClipLoss`).

- :class:`CaptionLoss` (token level, CoCa-style): a small causal text decoder with cross-attention to the ECG
  token states predicts the report tokens; teacher-forced cross-entropy ignoring padding.
- :class:`LocalAlignmentLoss` (beat level, GLoRIA local loss as used by MELP): each report sentence attends over
  the beat embeddings of every ECG in the batch; sentence-context similarities are aggregated per (report, ECG)
  pair and contrasted in both directions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable

__all__ = ["CaptionLoss", "LocalAlignmentLoss", "caption_loss", "local_alignment_scores"]


class CaptionDecoder(nn.Module):
    """Causal transformer decoder over token ids with cross-attention to ECG tokens.

    Shapes:
        ``forward(ids [B, L], memory [B, N, W], key_padding [B, L] bool True=pad) -> logits [B, L, V]``.
    """

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, max_length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Parameter(torch.zeros(1, max_length, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerDecoderLayer(width, heads, 4 * width, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
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
    """Next-token cross-entropy.

    Args:
        logits: ``[B, L-1, V]`` predictions for positions 1..L-1.
        ids: ``[B, L]`` token ids.
        attention_mask: ``[B, L]`` 1 for real tokens.

    Returns:
        Mean CE over real target tokens.
    """
    target = ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


class CaptionLoss(Configurable, nn.Module):
    """Token-level MELP loss: captioning the report from ECG token states.

    Args:
        vocab_size: tokenizer vocabulary size V.
        width: decoder width (= ECG ``token_dim``).
        layers / heads: decoder size.
        pad_id: padding id of the tokenizer.
        max_length: decoder context.
        max_captions: caption only the first ``max_captions`` samples of each (shuffled) batch; the vocabulary
            projection dominates the cost on CPU, and the loss stays an unbiased estimate. ``None`` = all.
        ecg / text: tower names in the outputs dict.
    """

    def __init__(
        self, vocab_size: int = 30522, width: int = 128, layers: int = 2, heads: int = 4, pad_id: int = 0,
        max_length: int = 128, max_captions: int | None = None, ecg: str = "ecg", text: str = "text",
    ) -> None:  # fmt: skip
        super().__init__()
        self.decoder = CaptionDecoder(vocab_size, width, layers, heads, max_length)
        self.pad_id, self.ecg, self.text = pad_id, ecg, text
        self.max_captions = max_captions

    def forward(self, ecg_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Args: ecg_tokens ``[B, N, W]``; input_ids, attention_mask ``[B, L]``. Returns ``{"loss", "ppl"}``."""
        ids = input_ids[:, :-1]
        pad = attention_mask[:, :-1] == 0
        logits = self.decoder(ids, ecg_tokens, pad)
        loss = caption_loss(logits, input_ids, attention_mask)
        return {"loss": loss, "ppl": loss.detach().exp()}

    def forward_outputs(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, Tensor]:
        e, t = outputs[self.ecg], outputs[self.text]
        if e.tokens is None:
            raise ValueError(f"CaptionLoss needs token states from tower {self.ecg!r}")
        k = e.tokens.shape[0] if self.max_captions is None else min(self.max_captions, e.tokens.shape[0])
        ids, att = t.extras["input_ids"][:k], t.extras["attention_mask"][:k]
        n = int(att.sum(1).max())  # drop all-padding columns of the subset
        return self(e.tokens[:k], ids[:, :n], att[:, :n])


def local_alignment_scores(
    beats: Tensor,
    beat_mask: Tensor,
    sents: Tensor,
    sent_mask: Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    attn_temperature: float = 0.1,
) -> Tensor:
    """GLoRIA local similarity of every (report i, ECG j) pair.

    For report i's sentences ``S_i`` and ECG j's beats ``Q_j`` (both L2-normalised): attention over sentences
    ``a = softmax_k(Q_j S_i^T / τ)``; per sentence, weights over beats ``α_k = softmax_q(γ1 · a_{·k})``; context
    ``c_k = Σ_q α_kq Q_jq``; score ``log Σ_k exp(γ2 · cos(S_ik, c_k))`` over real sentences.

    Args:
        beats: ``[B, Nb, D]``; beat_mask ``[B, Nb]`` bool.
        sents: ``[B, S, D]``; sent_mask ``[B, S]`` bool.
        gamma1, gamma2: GLoRIA temperatures; attn_temperature: τ of the sentence attention.

    Returns:
        ``[B, B]`` scores, row = report i, column = ECG j.
    """
    q = F.normalize(beats, dim=-1)
    s = F.normalize(sents, dim=-1)
    sim = torch.einsum("ikd,jqd->ijkq", s, q)  # [Bt, Be, S, Nb] cosine(sentence k of i, beat q of j)
    neg = torch.finfo(sim.dtype).min / 4
    smask = sent_mask[:, None, :, None]
    bmask = beat_mask[None, :, None, :]
    a = (sim / attn_temperature).masked_fill(~smask, neg).softmax(dim=2)  # over sentences
    alpha = (gamma1 * a).masked_fill(~bmask, neg).softmax(dim=3)  # over beats
    # cos(S_ik, c_k) with c_k = sum_q alpha_kq Q_q, without materialising c: S.c = sum_q alpha sim and
    # |c|^2 = alpha G alpha^T with the beat Gram matrix G_j = Q_j Q_j^T (memory O(B^2 S Nb), not O(B^2 S D)).
    dot = (alpha * sim).sum(-1)
    gram = torch.einsum("jqd,jpd->jqp", q, q)
    norm2 = (torch.einsum("ijkq,jqp->ijkp", alpha, gram) * alpha).sum(-1)
    r = dot / norm2.clamp_min(1e-12).sqrt()
    r = (gamma2 * r).masked_fill(~sent_mask[:, None, :], neg)
    return torch.logsumexp(r, dim=2)


class LocalAlignmentLoss(Configurable, nn.Module):
    """Beat-level MELP loss: GLoRIA local contrastive loss between report sentences and beat embeddings.

    Args:
        gamma1, gamma2, gamma3: GLoRIA temperatures (MELP: 4, 5, 10).
        attn_temperature: sentence-attention temperature on cosine similarities.
        ecg / text: tower names.

    Shapes:
        ``forward(beats [B, Nb, D], beat_mask [B, Nb], sents [B, S, D], sent_mask [B, S]) -> {"loss"}``.
    """

    def __init__(
        self, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0, attn_temperature: float = 0.1,
        ecg: str = "ecg", text: str = "text",
    ) -> None:  # fmt: skip
        super().__init__()
        self.gamma1, self.gamma2, self.gamma3, self.tau = gamma1, gamma2, gamma3, attn_temperature
        self.ecg, self.text = ecg, text

    def forward(self, beats: Tensor, beat_mask: Tensor, sents: Tensor, sent_mask: Tensor) -> dict[str, Tensor]:
        scores = self.gamma3 * local_alignment_scores(
            beats, beat_mask.bool(), sents, sent_mask.bool(), self.gamma1, self.gamma2, self.tau
        )  # fmt: skip
        # Records without any beat cannot be aligned: leave them out of both directions.
        ok = beat_mask.bool().any(1) & sent_mask.bool().any(1)
        if not ok.any():
            return {"loss": scores.sum() * 0.0}
        scores = scores[ok][:, ok]
        target = torch.arange(scores.shape[0], device=scores.device)
        loss = 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target))
        return {"loss": loss}

    def forward_outputs(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, Tensor]:
        e, t = outputs[self.ecg].extras, outputs[self.text].extras
        for key, src in (("beats", e), ("beat_mask", e), ("sentences", t), ("sentence_mask", t)):
            if key not in src:
                raise KeyError(f"LocalAlignmentLoss needs extras[{key!r}] (ECGTower beats!='none', ReportTower)")
        return self(e["beats"], e["beat_mask"], t["sentences"], t["sentence_mask"])
