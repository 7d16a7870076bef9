"""GLoRIA-style local alignment: text sentences (or words) attend over local features (patches, beats, frames).

Designed for chest X-rays (GLoRIA, Huang et al. 2021) and used at MELP's beat level. Under ``torch.distributed``
the contrastive part is global: each rank scores its own texts against every rank's local features and its own
local features against every rank's texts (gather with gradient), so the DDP-averaged loss equals the
single-process loss on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.losses.distributed import GatherFn, dist_info, gather_variable, global_max, global_mean, pad_dims_to

__all__ = ["LocalAlignmentLoss", "local_alignment_scores"]


def local_alignment_scores(
    local: Tensor,
    local_mask: Tensor | None,
    sents: Tensor,
    sent_mask: Tensor | None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    attn_temperature: float = 0.1,
) -> Tensor:
    """GLoRIA local similarity of every (text i, sample j) pair.

    For text i's sentences ``S_i`` and sample j's local features ``Q_j`` (both L2-normalised): attention over
    sentences ``a = softmax_k(Q_j S_iᵀ / τ)``; per sentence, weights over local features ``α_k = softmax_q(γ1·a_{·k})``;
    context ``c_k = Σ_q α_kq Q_jq``; score ``log Σ_k exp(γ2 · cos(S_ik, c_k))`` over real sentences.

    Args:
        local: ``[Bl, N, D]`` local features; ``local_mask`` ``[Bl, N]`` bool (``None`` = all valid).
        sents: ``[Bt, S, D]`` sentence embeddings; ``sent_mask`` ``[Bt, S]`` bool (``None`` = all valid).
        gamma1, gamma2: GLoRIA temperatures; attn_temperature: τ of the sentence attention.

    Returns:
        ``[Bt, Bl]`` scores, row = text i, column = sample j.
    """
    if local_mask is None:
        local_mask = torch.ones(local.shape[:2], dtype=torch.bool, device=local.device)
    if sent_mask is None:
        sent_mask = torch.ones(sents.shape[:2], dtype=torch.bool, device=sents.device)
    local_mask, sent_mask = local_mask.bool(), sent_mask.bool()
    q = F.normalize(local, dim=-1)
    s = F.normalize(sents, dim=-1)
    sim = torch.einsum("ikd,jqd->ijkq", s, q)  # [Bt, Bl, S, N] cosine(sentence k of i, local q of j)
    neg = torch.finfo(sim.dtype).min / 4
    a = (sim / attn_temperature).masked_fill(~sent_mask[:, None, :, None], neg).softmax(dim=2)  # over sentences
    alpha = (gamma1 * a).masked_fill(~local_mask[None, :, None, :], neg).softmax(dim=3)  # over local features
    # cos(S_ik, c_k) with c_k = Σ_q α_kq Q_q, without materialising c: S·c = Σ_q α sim and |c|² = α G αᵀ with the
    # Gram matrix G_j = Q_j Q_jᵀ (memory O(B² S N), not O(B² S D)).
    dot = (alpha * sim).sum(-1)
    gram = torch.einsum("jqd,jpd->jqp", q, q)
    norm2 = (torch.einsum("ijkq,jqp->ijkp", alpha, gram) * alpha).sum(-1)
    r = dot / norm2.clamp_min(1e-12).sqrt()
    r = (gamma2 * r).masked_fill(~sent_mask[:, None, :], neg)
    return torch.logsumexp(r, dim=2)


class LocalAlignmentLoss(Configurable, nn.Module):
    """GLoRIA local contrastive loss between text sentences and local features, symmetric over both directions.

    Samples without any valid local feature or sentence take no part (neither as anchor nor as negative).

    Args:
        gamma1, gamma2, gamma3: GLoRIA temperatures (GLoRIA and MELP: 4, 5, 10).
        attn_temperature: sentence-attention temperature on cosine similarities.
        gather_with_grad: under DDP, back-propagate through the gather of the other ranks' features.

    Shapes:
        ``forward(local [B, N, D], local_mask [B, N] | None, sents [B, S, D], sent_mask [B, S] | None)``
        → ``{"loss": []}``. Wire it with selectors such as
        ``LossTerm("local", LocalAlignmentLoss(), inputs=("image.tokens", "image.mask", "report.extras.sentences",
        "report.extras.sentence_mask"))``.
    """

    def __init__(
        self,
        gamma1: float = 4.0,
        gamma2: float = 5.0,
        gamma3: float = 10.0,
        attn_temperature: float = 0.1,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        self.gamma1, self.gamma2, self.gamma3, self.tau = gamma1, gamma2, gamma3, attn_temperature
        self.gather_with_grad = gather_with_grad
        self.rank: int | None = None
        self.world_size: int | None = None
        self.gather_fn: GatherFn | None = None

    def _scores(self, local: Tensor, local_mask: Tensor, sents: Tensor, sent_mask: Tensor) -> Tensor:
        return self.gamma3 * local_alignment_scores(
            local, local_mask, sents, sent_mask, self.gamma1, self.gamma2, self.tau
        )

    def forward(
        self, local: Tensor, local_mask: Tensor | None, sents: Tensor, sent_mask: Tensor | None
    ) -> dict[str, Tensor]:
        if local.shape[0] != sents.shape[0]:
            raise ValueError(f"need one text per sample, got {local.shape[0]} samples and {sents.shape[0]} texts")
        lmask = torch.ones(local.shape[:2], dtype=torch.bool, device=local.device) if local_mask is None else local_mask
        smask = torch.ones(sents.shape[:2], dtype=torch.bool, device=sents.device) if sent_mask is None else sent_mask
        lmask, smask = lmask.bool(), smask.bool()
        rank, world = dist_info()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        b = local.shape[0]
        if world > 1:
            # Ranks may hold different numbers of local features / sentences: pad to the global maximum first.
            n_max, s_max = global_max([local.shape[1], sents.shape[1]], world, local.device)
            if self.gather_fn is None:
                local, lmask = pad_dims_to(local, (n_max, local.shape[2])), pad_dims_to(lmask, (n_max,), False)
                sents, smask = pad_dims_to(sents, (s_max, sents.shape[2])), pad_dims_to(smask, (s_max,), False)
            g = {"rank": rank, "world_size": world, "gather_fn": self.gather_fn}
            all_local, sizes = gather_variable(local, with_grad=self.gather_with_grad, **g)
            all_lmask, _ = gather_variable(lmask, with_grad=False, **g)
            all_sents, _ = gather_variable(sents, with_grad=self.gather_with_grad, **g)
            all_smask, _ = gather_variable(smask, with_grad=False, **g)
            offset = sum(sizes[:rank])
        else:
            all_local, all_lmask, all_sents, all_smask, offset = local, lmask, sents, smask, 0
        ok_all = all_lmask.any(1) & all_smask.any(1)  # [B_all]
        ok = ok_all[offset : offset + b]
        target = torch.arange(b, device=local.device) + offset
        neg = torch.finfo(local.dtype).min / 4
        # Local texts against every sample, and local samples against every text (rows = local anchors).
        t2l = self._scores(all_local, all_lmask, sents, smask).masked_fill(~ok_all[None, :], neg)
        l2t = self._scores(local, lmask, all_sents, all_smask).T.masked_fill(~ok_all[None, :], neg)
        per_row = F.cross_entropy(t2l, target, reduction="none") + F.cross_entropy(l2t, target, reduction="none")
        local_sum = 0.5 * (per_row * ok).sum()
        if not bool(ok_all.any()):
            return {"loss": (t2l.sum() + l2t.sum()) * 0.0}  # nothing to align anywhere; keeps the graph connected
        return {"loss": global_mean(local_sum, ok.sum(), rank, world, self.gather_fn)}
