"""Probabilistic embeddings (ProbMed / PCME++): Gaussian heads, closed-form distances, losses, uncertainty.

**One convention throughout: a probabilistic embedding is ``cat([mu, logvar], -1)`` of shape ``[B, 2D]`` with
``logvar = log σ²`` (the PCME++ convention; PCME v1 stored ``log σ`` - a silent porting bug if mixed).** Towers
wrapped in :class:`ProbabilisticTower` emit exactly that as their ``embedding``, so similarities, losses,
retrieval and zero-shot scoring all take the same tensor.

Distances between diagonal Gaussians ``p = N(μ_p, diag σ_p²)`` and ``q``:

- squared Hellinger ``H² = 1 - BC`` with ``w_d = σ²_{p,d} + σ²_{q,d}`` and
  ``log BC = Σ_d [½ log(2 σ_{p,d} σ_{q,d} / w_d) - (μ_{p,d} - μ_{q,d})² / (4 w_d)]``, computed in log space
  (``BC`` underflows at D = 512) as ``H² = -expm1(log BC)``; similarity ``PS = 1 - √H²`` with ``H²`` clamped
  away from 0 before the square root (its gradient is infinite there);
- PCME++ closed-form sampled distance ``E‖z - z'‖² = ‖μ_p - μ_q‖² + Σ_d σ²_{p,d} + Σ_d σ²_{q,d}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vlp_core.config import Configurable
from vlp_core.losses import dist_info, gather_features
from vlp_core.similarity import Similarity
from vlp_core.towers import Tower, TowerOutput

__all__ = [
    "CSDSimilarity",
    "HellingerInfoNCE",
    "HellingerSimilarity",
    "PCMEppLoss",
    "ProbabilisticHead",
    "ProbabilisticTower",
    "SampledInstanceLoss",
    "UncertaintyAttenuationLoss",
    "VIBLoss",
    "csd",
    "hellinger_sq",
    "kl_to_standard_normal",
    "sample",
    "split_gaussian",
    "uncertainty",
]

LOGVAR_RANGE = (-12.0, 6.0)


def split_gaussian(emb: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., 2D]`` -> ``mu [..., D]``, ``logvar [..., D]`` (log σ²)."""
    if emb.shape[-1] % 2:
        raise ValueError(f"a probabilistic embedding has an even width [mu, logvar], got {emb.shape[-1]}")
    return emb.chunk(2, dim=-1)


def uncertainty(emb: Tensor) -> Tensor:
    """Σ_d σ²_d per row ``[B]`` (PCME++'s uncertainty; larger = less certain)."""
    return split_gaussian(emb)[1].exp().sum(-1)


def sample(emb: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Reparameterised samples ``z = μ + σ ε`` -> ``[n, B, D]`` (differentiable in μ and log σ²)."""
    mu, logvar = split_gaussian(emb)
    eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def _log_bc(mu_a: Tensor, lv_a: Tensor, mu_b: Tensor, lv_b: Tensor) -> Tensor:
    """Broadcasting log Bhattacharyya coefficient, summed over the last dim (float32 or wider)."""
    log_w = torch.logaddexp(lv_a, lv_b)  # log(σ_a² + σ_b²)
    term = 0.5 * (math.log(2.0) + 0.5 * (lv_a + lv_b) - log_w) - (mu_a - mu_b).square() * torch.exp(-log_w) / 4.0
    return term.sum(-1)


def hellinger_sq(a: Tensor, b: Tensor, pairwise: bool = True, chunk_size: int | None = 128) -> Tensor:
    """Squared Hellinger distance between diagonal Gaussians.

    Args:
        a: ``[B, 2D]`` (``[mu, logvar]``).
        b: ``[M, 2D]``.
        pairwise: ``True`` -> ``[B, M]`` (all pairs); ``False`` -> ``[B]`` (row-wise, needs ``B == M``).
        chunk_size: rows of ``a`` per block in the pairwise case; each block is recomputed in backward
            (activation checkpointing), so memory is ``O(chunk_size · M · D)`` instead of ``O(B · M · D)``.

    Returns:
        ``H²`` in ``[0, 1]``; computed in at least float32.
    """
    dtype = torch.promote_types(a.dtype, torch.float32)
    mu_a, lv_a = split_gaussian(a.to(dtype))
    mu_b, lv_b = split_gaussian(b.to(dtype))
    if not pairwise:
        return (-torch.expm1(_log_bc(mu_a, lv_a, mu_b, lv_b))).clamp(0.0, 1.0)

    def block(ma: Tensor, la: Tensor) -> Tensor:
        return -torch.expm1(_log_bc(ma[:, None], la[:, None], mu_b[None], lv_b[None]))

    n = mu_a.shape[0]
    if chunk_size is None or n <= chunk_size:
        return block(mu_a, lv_a).clamp(0.0, 1.0)
    grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    parts = []
    for i in range(0, n, chunk_size):
        ma, la = mu_a[i : i + chunk_size], lv_a[i : i + chunk_size]
        parts.append(checkpoint(block, ma, la, use_reentrant=False) if grad else block(ma, la))
    return torch.cat(parts).clamp(0.0, 1.0)


def csd(a: Tensor, b: Tensor, pairwise: bool = True) -> Tensor:
    """PCME++ closed-form sampled distance ``E‖z_a - z_b‖²`` -> ``[B, M]`` (or ``[B]`` row-wise)."""
    mu_a, lv_a = split_gaussian(a)
    mu_b, lv_b = split_gaussian(b)
    va, vb = lv_a.exp().sum(-1), lv_b.exp().sum(-1)
    if not pairwise:
        return (mu_a - mu_b).square().sum(-1) + va + vb
    sq = mu_a.square().sum(-1)[:, None] + mu_b.square().sum(-1)[None] - 2.0 * mu_a @ mu_b.T
    return sq.clamp_min(0.0) + va[:, None] + vb[None]


def kl_to_standard_normal(emb: Tensor) -> Tensor:
    """VIB term ``KL(N(μ, σ²) ‖ N(0, I))`` averaged over rows and dims: ``-½ mean(1 + log σ² - μ² - σ²)``."""
    mu, logvar = split_gaussian(emb)
    return -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).mean()


class HellingerSimilarity(Similarity):
    """``forward(a [B, 2D], b [M, 2D]) -> [B, M]`` probabilistic similarity ``PS = 1 - √H²`` in ``[0, 1]``.

    A core :class:`~vlp_core.similarity.Similarity` (before any logit scale), so core's losses, retrieval and
    zero-shot accept it unchanged (e.g. ``ClipLoss(similarity=HellingerSimilarity())``).

    Args:
        eps: ``H²`` is clamped to ``[eps, 1]`` before the square root (finite gradient at identical inputs).
        chunk_size: see :func:`hellinger_sq`.
    """

    def __init__(self, eps: float = 1e-6, chunk_size: int | None = 128) -> None:
        super().__init__()
        self.eps, self.chunk_size = eps, chunk_size

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return 1.0 - hellinger_sq(a, b, chunk_size=self.chunk_size).clamp_min(self.eps).sqrt()


class CSDSimilarity(Similarity):
    """``forward(a, b) -> -CSD [B, M]`` (PCME++'s retrieval score for the closed-form sampled distance)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return -csd(a, b)


class ProbabilisticHead(Configurable, nn.Module):
    """Mean and log-variance heads on a feature ``[B, in_dim]`` -> ``cat([mu, logvar]) [B, 2 · embed_dim]``.

    Args:
        in_dim: feature width.
        embed_dim: Gaussian dimension D.
        mean: ``"linear"`` (a fresh projection) or ``"identity"`` (the feature is already the mean; needs
            ``in_dim == embed_dim``; ProbMed initialises μ from the backbone projection).
        init_logvar: initial log σ² (bias of the zero-initialised log-variance layer).
        normalize_mean: put μ on the unit sphere (as PCME++ and CLIP-style spaces do). Without it the squared mean
            distances of a fresh projection are in the tens, every Bhattacharyya coefficient underflows
            (``H² = 1``, ``PS = 0`` for all pairs) and a Hellinger loss gets no gradient.
    """

    def __init__(
        self, in_dim: int, embed_dim: int, mean: str = "identity", init_logvar: float = -4.0,
        normalize_mean: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        if mean == "identity" and in_dim != embed_dim:
            raise ValueError(f"mean='identity' needs in_dim == embed_dim, got {in_dim} and {embed_dim}")
        self.mean = nn.Identity() if mean == "identity" else nn.Linear(in_dim, embed_dim)
        self.logvar = nn.Linear(in_dim, embed_dim)
        self.normalize_mean = normalize_mean
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, init_logvar)

    def forward(self, x: Tensor) -> Tensor:
        mu = self.mean(x)
        if self.normalize_mean:
            mu = F.normalize(mu, dim=-1)
        return torch.cat([mu, self.logvar(x).clamp(*LOGVAR_RANGE)], dim=-1)


class ProbabilisticTower(Tower):
    """Wraps any tower: its embedding becomes the mean, a fresh head adds log σ² -> ``embedding [B, 2D]``.

    Tokens, mask and extras pass through unchanged. ``output_dim`` is ``2 · D`` (the ``[mu, logvar]`` width).

    Args:
        tower: the deterministic tower (its ``output_dim`` is D).
        init_logvar: initial log σ². With unit means two unrelated items (``‖Δμ‖² ≈ 2``) start at
            ``log BC ≈ -1 / (4σ²) ≈ -3`` for the default ``-2.5``: far from both 0 and underflow.
        normalize_mean: unit-norm μ (see :class:`ProbabilisticHead`); the default.
    """

    def __init__(self, tower: nn.Module, init_logvar: float = -2.5, normalize_mean: bool = True) -> None:
        super().__init__()
        self.tower = tower
        d = int(tower.output_dim)
        self.head = ProbabilisticHead(d, d, mean="identity", init_logvar=init_logvar, normalize_mean=normalize_mean)
        self.output_dim = 2 * d
        self.token_dim = getattr(tower, "token_dim", None)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        if hasattr(self.tower, "set_gradient_checkpointing"):
            self.tower.set_gradient_checkpointing(enabled)

    def export_assets(self, directory: str, name: str) -> dict[str, Any] | None:
        inner = self.tower.export_assets(directory, name) if hasattr(self.tower, "export_assets") else None
        return None if not inner else {"tower": {"init_args": inner}}

    def forward(self, x: Any) -> TowerOutput:
        out = self.tower(x)
        return TowerOutput(self.head(out.embedding), out.tokens, out.mask, out.extras)


class _Scaled(Configurable, nn.Module):
    def __init__(self, init_logit_scale: float, max_logit_scale: float, learn: bool) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(init_logit_scale)), requires_grad=learn)
        self.max_log_scale = math.log(max_logit_scale)

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.logit_scale.clamp_(0.0, self.max_log_scale)


class HellingerInfoNCE(_Scaled):
    """Symmetric InfoNCE on the probabilistic similarity: ``L = ½[CE(s·PS(A, B), I) + CE(s·PS(B, A), I)]``.

    Under ``torch.distributed`` both sides are all-gathered with gradient and each rank scores its rows against
    the global batch (open_clip's local loss), so the DDP average equals the single-process loss.

    Args:
        init_logit_scale: initial ``s`` (``PS`` lies in ``[0, 1]``, so ``s`` must be large: default 20).
        max_logit_scale: ceiling of ``s``.
        learn_logit_scale: learn ``s``.
        chunk_size: row block of the pairwise Hellinger computation (memory, see :func:`hellinger_sq`).

    Shapes: ``a``, ``b``: ``[B, 2D]``. Returns ``{"loss", "logit_scale"}``.
    """

    def __init__(
        self, init_logit_scale: float = 20.0, max_logit_scale: float = 100.0, learn_logit_scale: bool = True,
        chunk_size: int | None = 128,
    ) -> None:  # fmt: skip
        super().__init__(init_logit_scale, max_logit_scale, learn_logit_scale)
        self.similarity = HellingerSimilarity(chunk_size=chunk_size)
        self.rank: int | None = None
        self.world_size: int | None = None

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        if a.shape != b.shape:
            raise ValueError(f"HellingerInfoNCE needs paired [B, 2D] inputs, got {tuple(a.shape)} and {tuple(b.shape)}")
        rank, world = dist_info()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        scale = self.logit_scale.exp()
        n = a.shape[0]
        if world > 1:
            all_a, all_b = gather_features(a, rank, world), gather_features(b, rank, world)
        else:
            all_a, all_b = a, b
        target = torch.arange(n, device=a.device) + (rank * n if world > 1 else 0)
        logits_ab = scale * self.similarity(a, all_b)
        logits_ba = logits_ab.T if world == 1 else scale * self.similarity(b, all_a)
        loss = 0.5 * (F.cross_entropy(logits_ab, target) + F.cross_entropy(logits_ba, target))
        return {"loss": loss, "logit_scale": scale.detach().squeeze()}


class PCMEppLoss(Configurable, nn.Module):
    """PCME++ (closed-form sampled distance) loss: ``2·BCE(-a·CSD + b, M) + α·pseudo-positive BCE + β·VIB``.

    ``M`` is the identity match matrix with label smoothing ``ε``; ``a`` and ``b`` are learnable (init 5, 5).
    Pseudo-positives: in each row (and column), candidates whose logit is at least the ground-truth logit count as
    positives in an extra BCE (weight ``α``), computed in both directions. VIB: ``β·[KL(a) + KL(b)]``.

    Args:
        init_scale: initial ``a``.
        init_shift: initial ``b``.
        alpha: pseudo-positive weight (0.1).
        beta: VIB weight (1e-4).
        smoothing: label smoothing ``ε`` (1e-4).

    Shapes: ``a``, ``b``: ``[B, 2D]``. Returns ``{"loss", "match", "pseudo", "vib", "scale"}``.
    """

    def __init__(
        self, init_scale: float = 5.0, init_shift: float = 5.0, alpha: float = 0.1, beta: float = 1e-4,
        smoothing: float = 1e-4,
    ) -> None:  # fmt: skip
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_scale)]))
        self.shift = nn.Parameter(torch.tensor([float(init_shift)]))
        self.alpha, self.beta, self.smoothing = alpha, beta, smoothing

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.scale.clamp_(min=1e-3)

    def forward(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        logits = -self.scale * csd(a, b) + self.shift
        n = logits.shape[0]
        eye = torch.eye(n, device=logits.device, dtype=logits.dtype)
        target = (1 - self.smoothing) * eye + self.smoothing * (1 - eye)
        match = 2.0 * F.binary_cross_entropy_with_logits(logits, target)
        pseudo = logits.new_zeros(())
        if self.alpha > 0:
            with torch.no_grad():
                gt = logits.diagonal()
                pp_rows = (logits >= gt[:, None]).to(logits.dtype)
                pp_cols = (logits >= gt[None, :]).to(logits.dtype)
            pseudo = F.binary_cross_entropy_with_logits(logits, torch.maximum(target, pp_rows)) + \
                F.binary_cross_entropy_with_logits(logits, torch.maximum(target, pp_cols))  # fmt: skip
        vib = kl_to_standard_normal(a) + kl_to_standard_normal(b)
        loss = match + self.alpha * pseudo + self.beta * vib
        return {"loss": loss, "match": match.detach(), "pseudo": pseudo.detach(), "vib": vib.detach(),
                "scale": self.scale.detach().squeeze()}  # fmt: skip


class SampledInstanceLoss(Configurable, nn.Module):
    """Intra-modality binding on reparameterised samples (our concrete form of ProbMed's synthetic sampling).

    Two samples ``z¹, z²`` per instance from ``N(μ, σ²)``; InfoNCE over cosine similarities with temperature
    ``τ``, ``z¹_i`` positive with ``z²_i`` and negative with the other instances' samples (symmetric). It pulls
    an instance's distribution tight relative to its neighbours and, through σ, penalises variance that makes
    instances confusable; the VIB term keeps σ from collapsing.

    Args:
        temperature: ``τ``.

    Shapes: ``x``: ``[B, 2D]``. Returns a scalar loss.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(sample(x, 2), dim=-1)
        logits = z[0] @ z[1].T / self.temperature
        target = torch.arange(x.shape[0], device=x.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class VIBLoss(Configurable, nn.Module):
    """``Σ_m KL(N(μ_m, σ_m²) ‖ N(0, I))`` over the given embeddings (each averaged over rows and dims)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, *embs: Tensor) -> Tensor:
        return sum(kl_to_standard_normal(e) for e in embs)  # type: ignore[return-value]


class UncertaintyAttenuationLoss(Configurable, nn.Module):
    """Ties each item's variance to how hard its own match is (learned loss attenuation, Kendall & Gal 2017).

    Our addition, not part of ProbMed or PCME++: with only a contrastive loss, a VIB and a sampled-instance term,
    nothing rewards variance on *ambiguous* items, and at the demo's scale σ² stays at its initial value for every
    input (its Σσ² carried no information about retrieval errors: AUROC 0.50). Here, per row, ``ℓ_i`` is the
    (detached) cross-entropy of item ``i`` finding its partner among the batch under ``scale · PS`` (image → text
    for rows of ``a``, text → image for rows of ``b``), ``r_i = ℓ_i / mean(ℓ)``, and
    ``u_i = log(mean_d σ²_i) - ref_logvar``. The term ``mean_i[r_i · exp(-u_i) + u_i]`` is minimised at
    ``mean_d σ²_i = exp(ref_logvar) · r_i``: items that are hard to match get proportionally larger variance, the
    batch average stays at the reference scale.

    With ``labels`` (finding labels of the batch, ``[B, K]``, NaN = not mentioned) the match is a *plausible* one
    (PCME's view): every item whose label vector equals item ``i``'s counts as a partner, ``ℓ_i = -log Σ_{j ∈ P(i)}
    softmax_j``. Difficulty then means "its findings are hard to tell", not "its report's phrasing is one of many
    near-duplicates" — the latter is what an exact-pair loss rewards with variance, and an image cannot show it.

    Args:
        scale: logit scale of the per-item cross-entropies (``PS`` lies in ``[0, 1]``).
        ref_logvar: reference log σ² (the probabilistic towers' initial value).

    Shapes: ``a``, ``b``: paired ``[B, 2D]``; ``labels``: optional ``[B, K]``. Returns a scalar loss.
    """

    def __init__(self, scale: float = 20.0, ref_logvar: float = -2.5) -> None:
        super().__init__()
        self.scale, self.ref_logvar = scale, ref_logvar
        self.similarity = HellingerSimilarity(chunk_size=None)

    @staticmethod
    def partners(labels: Tensor | None, n: int, device: torch.device) -> Tensor:
        """``[B, B]`` bool: the pair itself, plus (with ``labels``) every item with an equal label vector."""
        eye = torch.eye(n, dtype=torch.bool, device=device)
        if labels is None:
            return eye
        lab = labels.float()
        nan = torch.isnan(lab)
        equal = (lab[:, None] == lab[None]) | (nan[:, None] & nan[None])
        return eye | equal.all(-1)

    @staticmethod
    def _term(emb: Tensor, difficulty: Tensor, ref_logvar: float) -> Tensor:
        logvar = split_gaussian(emb)[1]
        u = torch.logsumexp(logvar, -1) - math.log(logvar.shape[-1]) - ref_logvar  # log mean σ² - reference
        r = difficulty / difficulty.mean().clamp_min(1e-8)
        return (r * torch.exp(-u) + u).mean()

    def forward(self, a: Tensor, b: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            logits = self.scale * self.similarity(a.float(), b.float())
            pos = self.partners(labels, a.shape[0], a.device)
            ce_a = -(logits.log_softmax(1).masked_fill(~pos, -math.inf).logsumexp(1))
            ce_b = -(logits.T.log_softmax(1).masked_fill(~pos.T, -math.inf).logsumexp(1))
        return 0.5 * (self._term(a, ce_a, self.ref_logvar) + self._term(b, ce_b, self.ref_logvar))
