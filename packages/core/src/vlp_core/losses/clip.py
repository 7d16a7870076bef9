"""Contrastive image/ECG/video–text losses: symmetric InfoNCE (CLIP), sigmoid (SigLIP), multi-positive InfoNCE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.losses.distributed import GatherFn, dist_info, gather_features, gather_variable, global_mean
from vlp_core.losses.functional import (
    chunked_cross_entropy,
    chunked_sigmoid_loss,
    chunked_symmetric_cross_entropy,
)
from vlp_core.similarity import Similarity, resolve_similarity

__all__ = ["ClipLoss", "MultiPositiveClipLoss", "SigLipLoss"]


class _ScaledContrastiveLoss(Configurable, nn.Module):
    """Holds the learnable log logit scale (a ``[1]`` parameter, FSDP-shardable) and the distributed settings."""

    def __init__(
        self,
        init_logit_scale: float,
        max_logit_scale: float,
        learn_logit_scale: bool,
        local_loss: bool,
        gather_with_grad: bool,
        chunk_size: int | None,
        similarity: Similarity | None = None,
        normalize_inputs: bool = True,
    ) -> None:
        super().__init__()
        if init_logit_scale <= 0 or max_logit_scale < 1:
            raise ValueError(
                f"need init_logit_scale > 0 and max_logit_scale >= 1, got {init_logit_scale}, {max_logit_scale}"
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(init_logit_scale)), requires_grad=learn_logit_scale)
        self.max_log_scale = math.log(max_logit_scale)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.chunk_size = chunk_size
        self.normalize_inputs = normalize_inputs
        self.similarity = resolve_similarity(similarity, normalize_inputs)
        if chunk_size is not None and not self.similarity.is_inner_product:
            raise ValueError(
                f"chunk_size needs an inner-product similarity (cosine, dot); {type(self.similarity).__name__} "
                "is scored densely"
            )
        # Tests emulate several ranks in one process by setting these three.
        self.rank: int | None = None
        self.world_size: int | None = None
        self.gather_fn: GatherFn | None = None

    def _logits(self, q: Tensor, k: Tensor, scale: Tensor) -> Tensor:
        """``scale * similarity(q, k)`` for prepared rows; inner products scale the ``[n, D]`` rows, not the
        ``[n, m]`` product (one elementwise pass over the logit matrix less, forward and backward)."""
        if self.similarity.is_inner_product:
            return (scale * q) @ k.T
        return scale * self.similarity.pairwise(q, k)

    def _dist(self) -> tuple[int, int]:
        rank, world = dist_info()
        return (self.rank if self.rank is not None else rank, self.world_size if self.world_size is not None else world)

    def _gather(self, x: Tensor, rank: int, world: int) -> Tensor:
        return gather_features(x, rank, world, with_grad=self.gather_with_grad, gather_fn=self.gather_fn)

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Clamp the log scale to ``[0, ln max_logit_scale]``; the Pretrainer calls this after every optimiser step."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    @staticmethod
    def _check_pair(a: Tensor, b: Tensor) -> None:
        if a.ndim < 2 or a.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"expected features [B, D] and [M, D] with equal D, got {tuple(a.shape)} and {tuple(b.shape)}"
            )


class ClipLoss(_ScaledContrastiveLoss):
    """Symmetric InfoNCE between paired embeddings (CLIP).

    ``L = 1/2 [CE(s A Bᵀ, I) + CE(s B Aᵀ, I)]`` with unit-norm rows of ``A`` and ``B`` and ``s = exp(θ)``,
    ``θ`` initialised at ``ln(1/0.07)`` and clamped to ``[0, ln 100]`` by :meth:`clamp_parameters`.

    Under ``torch.distributed`` each rank gathers all features (with gradient by default) and scores its local rows
    against the global batch (open_clip's local loss), so logits are ``n x N`` instead of ``N x N``; averaged over
    ranks by DDP, value and gradients equal the single-process loss on the concatenated batch.

    Args:
        init_logit_scale: initial ``s`` (1/temperature).
        max_logit_scale: ceiling of ``s`` enforced by :meth:`clamp_parameters`.
        learn_logit_scale: learn ``s``; ``False`` keeps the temperature fixed.
        local_loss: score local rows against gathered columns (memory linear in the global batch).
        gather_with_grad: back-propagate through the all-gather (needed for exact gradients with local loss).
        chunk_size: if set, compute the loss ``chunk_size`` rows at a time and recompute in backward so peak
            memory is linear in the batch (slower: one extra matmul per block). Inner-product similarities only.
        normalize_inputs: with the default similarity, cosine (``True``) or raw dot product (``False``).
        similarity: pairwise similarity (:mod:`vlp_core.similarity`); default cosine. Logits are
            ``s * similarity(a, b)``.

    Shapes:
        ``a``: ``[B, D]``, ``b``: ``[B, D]`` (row ``i`` of ``a`` pairs with row ``i`` of ``b``); other trailing
        shapes are allowed when the similarity accepts them.
        Returns ``{"loss": [], "logit_scale": []}``.
    """

    def __init__(
        self,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        chunk_size: int | None = None,
        normalize_inputs: bool = True,
        similarity: Similarity | None = None,
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, local_loss, gather_with_grad, chunk_size,
                         similarity, normalize_inputs)  # fmt: skip

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        self._check_pair(a, b)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"ClipLoss needs one b per a, got {a.shape[0]} and {b.shape[0]} rows")
        sim = self.similarity
        a, b = sim.prepare(a), sim.prepare(b)
        scale = self.logit_scale.exp()
        rank, world = self._dist()
        n = a.shape[0]
        if world > 1:
            all_a, all_b = self._gather(a, rank, world), self._gather(b, rank, world)
            if self.local_loss:
                qa, qb = a, b
                targets = torch.arange(n, device=a.device) + rank * n
            else:
                qa, qb = all_a, all_b
                targets = torch.arange(all_a.shape[0], device=a.device)
        else:
            all_a, all_b, qa, qb = a, b, a, b
            targets = torch.arange(n, device=a.device)

        if self.chunk_size is not None and qa is all_a and qb is all_b:
            # Square block (single process or global loss): one pass serves both directions.
            return {
                "loss": chunked_symmetric_cross_entropy(all_a, all_b, scale, self.chunk_size),
                "logit_scale": scale.detach().squeeze(),
            }
        if self.chunk_size is not None:
            loss_ab = chunked_cross_entropy(qa, all_b, scale, targets, self.chunk_size)
            loss_ba = chunked_cross_entropy(qb, all_a, scale, targets, self.chunk_size)
        else:
            logits_ab = self._logits(qa, all_b, scale)
            # Inner products: one matmul when the block is square and symmetric in roles (single process or global).
            logits_ba = logits_ab.T if (qa is all_a and sim.is_inner_product) else self._logits(qb, all_a, scale)
            loss_ab = F.cross_entropy(logits_ab, targets)
            loss_ba = F.cross_entropy(logits_ba, targets)
        return {"loss": 0.5 * (loss_ab + loss_ba), "logit_scale": scale.detach().squeeze()}


class SigLipLoss(_ScaledContrastiveLoss):
    """Pairwise sigmoid loss (SigLIP): ``L = -(1/B) Σ_ij log σ(z_ij (s <a_i, b_j> + bias))``, ``z = 2I - 1``.

    The bias is always consumed by the logits, so DDP never sees an unused parameter. Under ``torch.distributed``
    the ``b`` features are gathered with gradient and each rank scores its rows against all of them; the
    DDP-averaged loss and gradients equal the single-process loss on the concatenated batch.

    Args:
        init_logit_scale: initial ``s`` (default 10).
        init_logit_bias: initial bias (default -10).
        max_logit_scale: ceiling of ``s`` for :meth:`clamp_parameters`.
        learn_logit_scale: learn ``s`` and the bias.
        chunk_size: row-chunked, recompute-in-backward computation with ``O(chunk * N)`` memory.
        normalize_inputs: with the default similarity, cosine (``True``) or raw dot product (``False``).
        similarity: pairwise similarity (default cosine); logits are ``s * similarity(a, b) + bias``.

    Shapes:
        ``a``, ``b``: ``[B, D]``. Returns ``{"loss": [], "logit_scale": [], "logit_bias": []}``.
    """

    def __init__(
        self,
        init_logit_scale: float = 10.0,
        init_logit_bias: float = -10.0,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        gather_with_grad: bool = True,
        chunk_size: int | None = None,
        normalize_inputs: bool = True,
        similarity: Similarity | None = None,
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, True, gather_with_grad, chunk_size,
                         similarity, normalize_inputs)  # fmt: skip
        self.logit_bias = nn.Parameter(torch.full((1,), float(init_logit_bias)), requires_grad=learn_logit_scale)

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        self._check_pair(a, b)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"SigLipLoss needs one b per a, got {a.shape[0]} and {b.shape[0]} rows")
        a, b = self.similarity.prepare(a), self.similarity.prepare(b)
        scale = self.logit_scale.exp()
        rank, world = self._dist()
        n = a.shape[0]
        keys = self._gather(b, rank, world) if world > 1 else b
        offset = rank * n if world > 1 else 0
        if self.chunk_size is not None:
            loss = chunked_sigmoid_loss(a, keys, scale, self.logit_bias, offset, self.chunk_size)
        else:
            logits = self._logits(a, keys, scale) + self.logit_bias
            labels = -torch.ones_like(logits)
            idx = torch.arange(n, device=a.device)
            labels[idx, idx + offset] = 1.0
            loss = -F.logsigmoid(labels * logits).sum() / n
        return {"loss": loss, "logit_scale": scale.detach().squeeze(), "logit_bias": self.logit_bias.detach().squeeze()}


class MultiPositiveClipLoss(_ScaledContrastiveLoss):
    """InfoNCE with several weighted positives per anchor (multiple captions, sub-captions, knowledge aspects).

    For anchors ``a`` ``[B, D]``, candidates ``b`` ``[M, D]`` and non-negative positive weights ``P`` ``[B, M]``:
    ``L_ab = mean_i Σ_j p_ij (-log softmax_j(s·sim(a_i, b_j)))`` with ``p_i = P_i / Σ_j P_ij``, and ``L_ba``
    likewise over the candidates that have at least one positive anchor; ``L = (L_ab + L_ba) / 2``. With ``P = I``
    it equals :class:`ClipLoss`.

    ``pos`` is either the weight matrix ``[B, M]`` or an **owner index** ``[M]`` (long; the anchor row each
    candidate belongs to, as produced by :func:`vlp_core.data.collate_batch` for per-sample text lists), optionally
    with per-candidate ``weights`` ``[M]``. With ``ids`` ``[M]`` (long text ids; owner form only), candidates with
    the same id as one of an anchor's own candidates are positives of that anchor too — identical texts of other
    samples (also on other ranks) are never pushed apart as negatives.

    Under ``torch.distributed`` the global problem is the concatenation of every rank's anchors and candidates
    (block-diagonal ``P``, plus id matches); ranks may hold different ``B`` and ``M`` (variable-size gather), and
    the DDP-averaged loss and gradients equal the single-process loss on the concatenated batch.

    Args:
        init_logit_scale / max_logit_scale / learn_logit_scale: temperature, see :class:`ClipLoss`.
        gather_with_grad: back-propagate through the gather.
        normalize_inputs: with the default similarity, cosine (``True``) or dot product.
        similarity: pairwise similarity (default cosine).

    Shapes:
        ``a`` ``[B, D]``, ``b`` ``[M, D]``, ``pos`` ``[B, M]`` float or ``[M]`` long, ``weights`` ``[M]``,
        ``ids`` ``[M]``. Returns ``{"loss", "logit_scale"}``.
    """

    def __init__(
        self,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        gather_with_grad: bool = True,
        normalize_inputs: bool = True,
        similarity: Similarity | None = None,
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, True, gather_with_grad, None,
                         similarity, normalize_inputs)  # fmt: skip

    def _local_positives(self, pos: Tensor, n: int, m: int, weights: Tensor | None, dtype: torch.dtype) -> Tensor:
        if pos.ndim == 1:
            if pos.is_floating_point() or pos.shape[0] != m:
                raise ValueError(
                    f"an owner index must be a long tensor [M] = [{m}], got {tuple(pos.shape)} {pos.dtype}"
                )
            if m and (int(pos.min()) < 0 or int(pos.max()) >= n):
                raise ValueError(f"owner index values must lie in [0, {n}), got [{int(pos.min())}, {int(pos.max())}]")
            w = torch.ones(m, dtype=dtype, device=pos.device) if weights is None else weights.to(dtype)
            dense = torch.zeros(n, m, dtype=dtype, device=pos.device)
            dense[pos.long(), torch.arange(m, device=pos.device)] = w
            pos = dense
        elif weights is not None:
            raise ValueError(
                "weights are given inside the [B, M] positive matrix; pass weights only with an owner index"
            )
        if pos.shape != (n, m):
            raise ValueError(f"pos must be [B, M] = {(n, m)} or an owner index [M], got {tuple(pos.shape)}")
        pos = pos.to(dtype)
        if (pos < 0).any() or not torch.isfinite(pos).all():
            raise ValueError("pos weights must be finite and non-negative")
        return pos

    def forward(
        self, a: Tensor, b: Tensor, pos: Tensor, ids: Tensor | None = None, weights: Tensor | None = None
    ) -> dict[str, Tensor]:
        self._check_pair(a, b)
        n, m = a.shape[0], b.shape[0]
        p_loc = self._local_positives(pos, n, m, weights, a.dtype)
        if ids is not None and pos.ndim != 1:
            raise ValueError("text ids need the owner-index form of pos")
        no_pos = torch.nonzero(p_loc.sum(1) <= 0).flatten().tolist()
        if no_pos:
            raise ValueError(f"every anchor needs at least one positive; rows without one: {no_pos[:5]}")
        sim = self.similarity
        a, b = sim.prepare(a), sim.prepare(b)
        scale = self.logit_scale.exp()
        rank, world = self._dist()
        g = {"rank": rank, "world_size": world, "gather_fn": self.gather_fn}
        all_a, a_sizes = gather_variable(a, with_grad=self.gather_with_grad, **g)
        all_b, b_sizes = gather_variable(b, with_grad=self.gather_with_grad, **g)
        a_off, b_off = sum(a_sizes[:rank]), sum(b_sizes[:rank])
        # Row targets: local anchors x all candidates; column targets: local candidates x all anchors.
        row_t = p_loc.new_zeros(n, all_b.shape[0])
        row_t[:, b_off : b_off + m] = p_loc
        col_t = p_loc.new_zeros(m, all_a.shape[0])
        col_t[:, a_off : a_off + n] = p_loc.T
        if ids is not None:
            w_loc = p_loc.sum(0)  # each candidate's own weight (one owner per candidate)
            all_ids, _ = gather_variable(ids.long(), with_grad=False, **g)
            all_w, _ = gather_variable(w_loc.detach(), with_grad=False, **g)
            owners = pos.long() + a_off
            all_owner, _ = gather_variable(owners, with_grad=False, **g)
            same = ids.long()[:, None] == all_ids[None, :]  # [M, M_tot]
            # Anchor i also owns every candidate whose text equals one of its own candidates' texts.
            extra_rows = (p_loc > 0).to(a.dtype) @ same.to(a.dtype) > 0  # [B, M_tot]
            row_t = torch.where(extra_rows & (row_t == 0), all_w[None, :].expand_as(row_t), row_t)
            anchors = torch.zeros(all_b.shape[0], all_a.shape[0], dtype=a.dtype, device=a.device)
            anchors[torch.arange(all_b.shape[0], device=a.device), all_owner] = 1.0
            extra_cols = same.to(a.dtype) @ anchors > 0  # [M, B_tot]
            col_t = torch.where(extra_cols & (col_t == 0), w_loc[:, None].expand_as(col_t), col_t)
        row_t = row_t / row_t.sum(1, keepdim=True)
        loss_rows = -(row_t * F.log_softmax(self._logits(a, all_b, scale), dim=1)).sum()
        col_mass = col_t.sum(1)
        valid = col_mass > 0
        col_t = col_t / col_mass.clamp_min(1e-12)[:, None]
        loss_cols = -((col_t * F.log_softmax(self._logits(b, all_a, scale), dim=1)).sum(1) * valid).sum()
        loss_ab = global_mean(loss_rows, torch.tensor(float(n)), rank, world, self.gather_fn)
        loss_ba = global_mean(loss_cols, valid.sum(), rank, world, self.gather_fn)
        return {"loss": 0.5 * (loss_ab + loss_ba), "logit_scale": scale.detach().squeeze()}
