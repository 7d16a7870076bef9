"""Contrastive image/ECG/video–text losses: symmetric InfoNCE (CLIP), sigmoid (SigLIP), multi-positive InfoNCE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.losses.distributed import GatherFn, dist_info, gather_features
from vlp_core.losses.functional import (
    chunked_cross_entropy,
    chunked_sigmoid_loss,
    chunked_symmetric_cross_entropy,
    normalize,
)

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
        # Tests emulate several ranks in one process by setting these three.
        self.rank: int | None = None
        self.world_size: int | None = None
        self.gather_fn: GatherFn | None = None

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
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
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
            memory is linear in the batch (slower: one extra matmul per block).
        normalize_inputs: L2-normalise the inputs (set ``False`` if they already are).

    Shapes:
        ``a``: ``[B, D]``, ``b``: ``[B, D]`` (row ``i`` of ``a`` pairs with row ``i`` of ``b``).
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
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, local_loss, gather_with_grad, chunk_size)
        self.normalize_inputs = normalize_inputs

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        self._check_pair(a, b)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"ClipLoss needs one b per a, got {a.shape[0]} and {b.shape[0]} rows")
        if self.normalize_inputs:
            a, b = normalize(a), normalize(b)
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
            logits_ab = scale * qa @ all_b.T
            # One matmul when the block is square and symmetric in roles (single process or global loss).
            logits_ba = logits_ab.T if qa is all_a else scale * qb @ all_a.T
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
        normalize_inputs: L2-normalise the inputs.

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
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, True, gather_with_grad, chunk_size)
        self.logit_bias = nn.Parameter(torch.full((1,), float(init_logit_bias)), requires_grad=learn_logit_scale)
        self.normalize_inputs = normalize_inputs

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        self._check_pair(a, b)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"SigLipLoss needs one b per a, got {a.shape[0]} and {b.shape[0]} rows")
        if self.normalize_inputs:
            a, b = normalize(a), normalize(b)
        scale = self.logit_scale.exp()
        rank, world = self._dist()
        n = a.shape[0]
        keys = self._gather(b, rank, world) if world > 1 else b
        offset = rank * n if world > 1 else 0
        if self.chunk_size is not None:
            loss = chunked_sigmoid_loss(a, keys, scale, self.logit_bias, offset, self.chunk_size)
        else:
            logits = scale * a @ keys.T + self.logit_bias
            labels = -torch.ones_like(logits)
            idx = torch.arange(n, device=a.device)
            labels[idx, idx + offset] = 1.0
            loss = -F.logsigmoid(labels * logits).sum() / n
        return {"loss": loss, "logit_scale": scale.detach().squeeze(), "logit_bias": self.logit_bias.detach().squeeze()}


class MultiPositiveClipLoss(_ScaledContrastiveLoss):
    """InfoNCE with several weighted positives per anchor (multiple captions / sub-captions / knowledge aspects).

    For anchors ``a`` ``[B, D]``, candidates ``b`` ``[M, D]`` and non-negative weights ``pos`` ``[B, M]``:
    ``L_ab = mean_i Σ_j p_ij (-log softmax_j(s a_i·b_j))`` with ``p_i = pos_i / Σ_j pos_ij``, and
    ``L_ba`` likewise over the columns of ``pos`` that have at least one positive; ``L = (L_ab + L_ba) / 2``.
    With ``pos = I`` it equals :class:`ClipLoss`. Under ``torch.distributed`` the global positive matrix is the
    block diagonal of the per-rank matrices (a rank's candidates belong to its own anchors); every rank must have
    the same ``B`` and ``M``.

    Shapes:
        ``a``: ``[B, D]``, ``b``: ``[M, D]``, ``pos``: ``[B, M]``. Returns ``{"loss", "logit_scale"}``.
    """

    def __init__(
        self,
        init_logit_scale: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        learn_logit_scale: bool = True,
        gather_with_grad: bool = True,
        normalize_inputs: bool = True,
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale, True, gather_with_grad, None)
        self.normalize_inputs = normalize_inputs

    def forward(self, a: Tensor, b: Tensor, pos: Tensor) -> dict[str, Tensor]:
        self._check_pair(a, b)
        if pos.shape != (a.shape[0], b.shape[0]):
            raise ValueError(f"pos must be [B, M] = {(a.shape[0], b.shape[0])}, got {tuple(pos.shape)}")
        pos = pos.to(a.dtype)
        if (pos < 0).any() or not torch.isfinite(pos).all():
            raise ValueError("pos weights must be finite and non-negative")
        row_mass = pos.sum(1)
        if (row_mass <= 0).any():
            bad = torch.nonzero(row_mass <= 0).flatten().tolist()[:5]
            raise ValueError(f"every anchor needs at least one positive; rows without one: {bad}")
        if self.normalize_inputs:
            a, b = normalize(a), normalize(b)
        scale = self.logit_scale.exp()
        rank, world = self._dist()
        n, m = pos.shape
        if world > 1:
            all_a, all_b = self._gather(a, rank, world), self._gather(b, rank, world)
        else:
            all_a, all_b = a, b
        # Row direction: local anchors vs all candidates; the local block sits at columns rank*m.
        row_t = pos.new_zeros(n, all_b.shape[0])
        row_t[:, rank * m : (rank + 1) * m] = pos / row_mass[:, None]
        loss_ab = -(row_t * F.log_softmax(scale * a @ all_b.T, dim=1)).sum(1).mean()
        # Column direction: local candidates with at least one positive vs all anchors.
        col_mass = pos.sum(0)
        valid = col_mass > 0
        col_t = pos.new_zeros(m, all_a.shape[0])
        col_t[:, rank * n : (rank + 1) * n] = pos.T / col_mass.clamp_min(1e-12)[:, None]
        per_col = -(col_t * F.log_softmax(scale * b @ all_a.T, dim=1)).sum(1)
        n_valid = valid.sum().to(a.dtype).reshape(1)
        if world > 1:
            # Normalise by the global count so the DDP average equals the single-process loss.
            total_valid = gather_features(n_valid.detach(), rank, world, with_grad=False, gather_fn=self.gather_fn)
            loss_ba = (per_col * valid).sum() * world / total_valid.sum().clamp_min(1.0)
        else:
            loss_ba = (per_col * valid).sum() / n_valid.clamp_min(1.0).squeeze()
        return {"loss": 0.5 * (loss_ab + loss_ba), "logit_scale": scale.detach().squeeze()}
