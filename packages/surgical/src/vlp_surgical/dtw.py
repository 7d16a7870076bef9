"""Batched soft-DTW on cost matrices: anti-diagonal wavefront, length masks, analytic backward, hard DTW + path.

The recursion (Cuturi & Blondel, 2017) over a cost matrix ``D [N, M]``::

    R[0, 0] = 0,   R[i, 0] = R[0, j] = +inf,
    R[i, j] = D[i-1, j-1] + softmin_γ(R[i-1, j-1], R[i-1, j], R[i, j-1]),      value = R[n, m]

with two relaxations of the minimum:

- ``"logsumexp"``: ``softmin_γ(r) = -γ log Σ_k exp(-r_k / γ)`` (soft-DTW proper; tslearn, pysdtw).
- ``"prob"``: ``softmin_γ(r) = Σ_k softmax(-r / γ)_k r_k`` (the expectation under the soft-argmin weights; D2TW /
  Drop-DTW, PeskaVLP's default ``dtw_prob``). It is bounded below by the hard minimum, unlike ``"logsumexp"``.

``γ = 0`` is the classic (hard) DTW with a sub-gradient (the optimal path as a 0/1 matrix).

Every cell of an anti-diagonal ``i + j = d`` depends only on diagonals ``d - 1`` and ``d - 2``. The table is stored
*skewed*, ``S[b, d, i] = R[b, i, d - i]``, so each wavefront step reads and writes contiguous slices for the whole
batch at once (no per-cell Python, no gathers in the loop): ``N + M - 1`` steps of a few vector ops. The shorter
sequence is put on the ``i`` axis (the recursion is symmetric under transposition) to keep the skewed table small.
Memory is one ``[B, N + M + 1, min(N, M) + 1]`` table saved for the backward pass, which recomputes the local
soft-argmin weights from it and runs the same wavefront in reverse (the ``E`` table of Cuturi & Blondel, Alg. 2).

Variable lengths: cells past ``(n_b, m_b)`` get cost ``+inf`` and the value is read at ``R[b, n_b, m_b]``, so a padded
batch gives exactly the unpadded per-sample results (and zero gradient on the padding).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "SoftDTW",
    "numba_available",
    "dtw_path",
    "pairwise_cosine_distance",
    "pairwise_sqeuclidean",
    "soft_alignment",
    "soft_dtw",
    "soft_dtw_divergence",
]

Relaxation = Literal["logsumexp", "prob"]
_INF = float("inf")


# ---------------------------------------------------------------------------------------------------- cost helpers
def pairwise_sqeuclidean(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``[B, N, M]`` between ``x [B, N, D]`` and ``y [B, M, D]``.

    ``|x|² + |y|² - 2 x·y`` through one batched matmul (no ``[B, N, M, D]`` intermediate), clamped at 0.
    """
    sq = x.pow(2).sum(-1).unsqueeze(2) + y.pow(2).sum(-1).unsqueeze(1)
    return torch.baddbmm(sq, x, y.transpose(1, 2), alpha=-2.0).clamp_min(0.0)


def pairwise_cosine_distance(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cos(x_i, y_j)`` ``[B, N, M]`` for ``x [B, N, D]``, ``y [B, M, D]``."""
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return 1.0 - xn @ yn.transpose(1, 2)


# ---------------------------------------------------------------------------------------------------- index helpers
def _lengths(lengths: Tensor | None, full: int, batch: int, device: torch.device, name: str) -> Tensor:
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
    if lengths.numel() != batch:
        raise ValueError(f"{name} has {lengths.numel()} entries for a batch of {batch}")
    if bool(((lengths < 1) | (lengths > full)).any()):
        raise ValueError(f"{name} must lie in [1, {full}], got {lengths.tolist()}")
    return lengths


def _skew_index(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Index maps between a cost ``[n, m]`` (flattened) and the skewed table ``[n + m + 1, n + 1]``.

    Returns ``(fwd, ii, jj)``: ``fwd[d, i]`` is the flat cost index of cell ``(i, d - i)`` (1-based) or ``n * m``
    (a +inf sentinel) when that cell does not exist; ``ii``/``jj`` are the 1-based row/column of every skewed cell.
    """
    d = torch.arange(n + m + 1, device=device).unsqueeze(1)
    ii = torch.arange(n + 1, device=device).unsqueeze(0).expand(n + m + 1, n + 1)
    jj = d - ii
    valid = (ii >= 1) & (jj >= 1) & (jj <= m)
    fwd = torch.where(valid, (ii - 1) * m + (jj - 1), torch.full_like(ii, n * m))
    return fwd, ii, jj


def _mask_cost(cost: Tensor, n_len: Tensor, m_len: Tensor, band: float | None, fill: float = _INF) -> Tensor:
    """Cost with ``fill`` outside each sample's ``[n_b, m_b]`` block (and outside the band, when given)."""
    _, n, m = cost.shape
    i = torch.arange(n, device=cost.device).view(1, n, 1)
    j = torch.arange(m, device=cost.device).view(1, 1, m)
    outside = (i >= n_len.view(-1, 1, 1)) | (j >= m_len.view(-1, 1, 1))
    if band is not None:
        # Length-ratio-aware Sakoe–Chiba band around the line from (1, 1) to (n_b, m_b), in units of columns.
        nb = n_len.view(-1, 1, 1).to(cost.dtype)
        mb = m_len.view(-1, 1, 1).to(cost.dtype)
        slope = torch.where(nb > 1, (mb - 1) / (nb - 1).clamp_min(1), torch.zeros_like(mb))
        outside = outside | ((j - i * slope).abs() > band)
    return cost.masked_fill(outside, fill)


# ---------------------------------------------------------------------------------------------------- local softmin
# The analytic kernel marks missing cells with a huge *finite* sentinel instead of +inf: exp(-(BIG - m)/γ) is exactly
# 0, so no inf - inf = NaN can arise and no per-step guards are needed. Values >= BIG / 2 are reported as +inf.
_BIG = {torch.float32: 1e30, torch.float64: 1e250}


def _big(dtype: torch.dtype) -> float:
    return _BIG[dtype]


def _softmin3(r: Tensor, gamma: float, relaxation: str) -> Tensor:
    """Relaxed minimum over dim 0 of ``r [3, B, n]`` (sentinel-aware, no infs)."""
    m = r.amin(0)
    if gamma == 0.0:
        return m
    e = torch.sub(m, r).mul_(1.0 / gamma).exp_()
    if relaxation == "logsumexp":
        return m - gamma * e.sum(0).log_()
    return (e * r).sum(0) / e.sum(0)


def _weights3(r: Tensor, gamma: float, relaxation: str) -> Tensor:
    """``∂ softmin(r) / ∂ r`` ``[3, B, n]`` for ``r [3, B, n]`` (neighbours at the sentinel get exactly 0)."""
    m = r.amin(0)
    if gamma == 0.0:
        # One-hot sub-gradient; ties go to the first neighbour in (diagonal, up, left) order.
        first = torch.zeros_like(r, dtype=torch.bool)
        taken = torch.zeros_like(m, dtype=torch.bool)
        for k in range(3):
            first[k] = (r[k] == m) & ~taken
            taken |= first[k]
        return first.to(r.dtype)
    e = torch.sub(m, r).mul_(1.0 / gamma).exp_()
    p = e / e.sum(0)
    if relaxation == "logsumexp":
        return p
    # d/dr_k Σ_l p_l r_l = p_k (1 - (r_k - μ) / γ), μ = Σ_l p_l r_l.
    mu = (p * r).sum(0)
    return p * (1.0 - (r - mu) / gamma)


def _neighbours(s: Tensor, d: int) -> Tensor:
    """``[3, B, n]`` = (R[i-1, j-1], R[i-1, j], R[i, j-1]) for the cells ``i = 1..n`` of skewed diagonal ``d``."""
    return torch.stack((s[:, d - 2, :-1], s[:, d - 1, :-1], s[:, d - 1, 1:]))


def _forward_table(cost_skew: Tensor, gamma: float, relaxation: str) -> Tensor:
    """Fill the skewed table ``S [B, n + m + 1, n + 1]`` from the skewed cost (same shape, sentinel-filled)."""
    s = torch.full_like(cost_skew, _big(cost_skew.dtype))
    s[:, 0, 0] = 0.0
    for d in range(2, s.shape[1]):
        torch.add(cost_skew[:, d, 1:], _softmin3(_neighbours(s, d), gamma, relaxation), out=s[:, d, 1:])
    return s


def _skew_cost(cost: Tensor) -> Tensor:
    """Skewed, sentinel-filled cost ``[B, n + m + 1, n + 1]`` from a masked cost ``[B, n, m]``."""
    b, n, m = cost.shape
    fwd, _, _ = _skew_index(n, m, cost.device)
    big = _big(cost.dtype)
    flat = torch.cat((cost.reshape(b, n * m).clamp_max(big), cost.new_full((b, 1), big)), dim=1)
    return flat[:, fwd]


def _prepare(
    cost: Tensor, x_lengths: Tensor | None, y_lengths: Tensor | None, band: float | None
) -> tuple[Tensor, Tensor, Tensor, bool]:
    if cost.ndim == 2:
        cost = cost.unsqueeze(0)
    if cost.ndim != 3:
        raise ValueError(f"soft-DTW expects a cost [B, N, M], got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise TypeError(f"soft-DTW cost must be floating point, got {cost.dtype}")
    if cost.dtype not in _BIG:  # half precision: the recursion accumulates, run it in float32
        cost = cost.float()
    b, n, m = cost.shape
    n_len = _lengths(x_lengths, n, b, cost.device, "x_lengths")
    m_len = _lengths(y_lengths, m, b, cost.device, "y_lengths")
    transposed = n > m
    if transposed:  # shorter sequence on the skewed axis: table (n + m + 1) × (min + 1)
        cost, n_len, m_len = cost.transpose(1, 2), m_len, n_len
    return _mask_cost(cost, n_len, m_len, band), n_len, m_len, transposed


@contextmanager
def _wavefront_threads(t: Tensor) -> Iterator[None]:
    """Run a CPU wavefront on one intra-op thread when each step is small.

    Each anti-diagonal step is a handful of ops on ``3 × B × n`` elements; torch parallelises transcendental ops
    (exp/log) from a few thousand elements on, and the fork/join per op then costs more than the op itself (10x
    slower on two busy cores). Restored on exit.
    """
    before = torch.get_num_threads()
    small = t.device.type == "cpu" and 3 * t.shape[0] * t.shape[-1] < _PARALLEL_MIN
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before > 1:
            torch.set_num_threads(before)


_PARALLEL_MIN = 1 << 17


def _read_end(s: Tensor, n_len: Tensor, m_len: Tensor) -> Tensor:
    value = s[torch.arange(s.shape[0], device=s.device), n_len + m_len, n_len]
    return value.masked_fill(value >= 0.5 * _big(s.dtype), _INF)  # no admissible path (band too narrow)


class _SoftDTWFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost: Tensor, n_len: Tensor, m_len: Tensor, gamma: float, relaxation: str) -> Tensor:  # type: ignore[override]
        skewed = _skew_cost(cost)
        with _wavefront_threads(skewed):
            s = _forward_table(skewed, gamma, relaxation)
        ctx.save_for_backward(s, n_len, m_len)
        ctx.gamma, ctx.relaxation, ctx.shape = gamma, relaxation, tuple(cost.shape[1:])
        return _read_end(s, n_len, m_len)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, n_len, m_len = ctx.saved_tensors
        n, m = ctx.shape
        b = s.shape[0]
        # E = ∂L/∂R on the skewed grid, seeded at each sample's end cell; ∂R_ij/∂D_ij = 1, so ∂L/∂D = E.
        e = torch.zeros_like(s)
        e[torch.arange(b, device=s.device), n_len + m_len, n_len] = grad_out.to(s.dtype)
        with _wavefront_threads(s):
            for d in range(s.shape[1] - 1, 1, -1):
                w = _weights3(_neighbours(s, d), ctx.gamma, ctx.relaxation).mul_(e[:, d, 1:])
                e[:, d - 2, :-1] += w[0]
                e[:, d - 1, :-1] += w[1]
                e[:, d - 1, 1:] += w[2]
        # Unskew: cell (i, j) (1-based) lives at S[i + j, i].
        i = torch.arange(1, n + 1, device=s.device).view(n, 1)
        j = torch.arange(1, m + 1, device=s.device).view(1, m)
        idx = ((i + j) * (n + 1) + i).reshape(-1)
        grad = e.reshape(b, -1)[:, idx].view(b, n, m)
        return grad, None, None, None, None


class _NumbaSoftDTWFunction(torch.autograd.Function):
    """CPU fast path: the same table and analytic backward computed by numba kernels (``_dtw_numba``)."""

    @staticmethod
    def forward(ctx, cost: Tensor, n_len: Tensor, m_len: Tensor, gamma: float, relaxation: str) -> Tensor:  # type: ignore[override]
        from vlp_surgical import _dtw_numba

        nl, ml = n_len.cpu().numpy().astype(np.int64), m_len.cpu().numpy().astype(np.int64)
        r, value = _dtw_numba.forward(cost.detach().numpy(), nl, ml, gamma, relaxation == "prob", _big(cost.dtype))
        ctx.table, ctx.lengths, ctx.gamma, ctx.relaxation = r, (nl, ml), gamma, relaxation
        out = torch.from_numpy(value)
        return out.masked_fill(out >= 0.5 * _big(cost.dtype), _INF)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        from vlp_surgical import _dtw_numba

        g = _dtw_numba.backward(ctx.table, *ctx.lengths, grad_out.detach().cpu().numpy(), ctx.gamma,
                                ctx.relaxation == "prob")  # fmt: skip
        return torch.from_numpy(g), None, None, None, None


def numba_available() -> bool:
    """Whether the numba CPU fast path of :func:`soft_dtw` can run here."""
    try:
        from vlp_surgical import _dtw_numba
    except ImportError:  # pragma: no cover
        return False
    return _dtw_numba.AVAILABLE


def _autograd_soft_dtw(cost: Tensor, n_len: Tensor, m_len: Tensor, gamma: float, relaxation: str) -> Tensor:
    """The same wavefront with differentiable ops and true ``+inf`` borders (an independent reference for the
    analytic backward; supports higher-order gradients)."""
    b, n, m = cost.shape
    fwd, _, _ = _skew_index(n, m, cost.device)
    flat = torch.cat((cost.reshape(b, n * m), cost.new_full((b, 1), _INF)), dim=1)
    cskew = flat[:, fwd]
    inf_row = cost.new_full((b, n + 1), _INF)
    diags = [torch.cat((cost.new_zeros(b, 1), cost.new_full((b, n), _INF)), dim=1), inf_row]
    for d in range(2, n + m + 1):
        r = torch.stack((diags[d - 2][:, :-1], diags[d - 1][:, :-1], diags[d - 1][:, 1:]), dim=-1)
        # Double-where: unreachable cells (all neighbours +inf) must not send NaN gradients through the softmin.
        dead = torch.isinf(r).all(-1)
        r_safe = torch.where(dead.unsqueeze(-1), torch.zeros_like(r), r)
        if gamma == 0.0:
            sm = r_safe.amin(-1)
        elif relaxation == "logsumexp":
            sm = -gamma * torch.logsumexp(-r_safe / gamma, dim=-1)
        else:
            p = torch.softmax(-r_safe / gamma, dim=-1)
            rz = torch.where(torch.isfinite(r_safe), r_safe, torch.zeros_like(r_safe))
            sm = (p * rz).sum(-1)
        sm = torch.where(dead, torch.full_like(sm, _INF), sm)
        diags.append(torch.cat((inf_row[:, :1], cskew[:, d, 1:] + sm), dim=1))
    table = torch.stack(diags, dim=1)
    return table[torch.arange(b, device=cost.device), n_len + m_len, n_len]


# ---------------------------------------------------------------------------------------------------- public API
def soft_dtw(
    cost: Tensor,
    gamma: float = 1.0,
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    relaxation: Relaxation = "logsumexp",
    band: float | None = None,
    backend: Literal["auto", "numba", "analytic", "autograd"] = "auto",
) -> Tensor:
    """Soft-DTW value of each cost matrix in a batch.

    Args:
        cost: pairwise costs ``[B, N, M]`` (or ``[N, M]``); padded entries may hold anything (they are masked).
        gamma: smoothing ``γ ≥ 0``; ``0`` gives classic DTW (hard minimum, sub-gradient along the optimal path).
        x_lengths: valid rows per sample ``[B]`` (default ``N``).
        y_lengths: valid columns per sample ``[B]`` (default ``M``).
        relaxation: ``"logsumexp"`` (Cuturi & Blondel) or ``"prob"`` (soft-argmin expectation, PeskaVLP).
        band: optional Sakoe–Chiba half-width in columns around the line from ``(1, 1)`` to ``(n_b, m_b)``
            (length-ratio aware); cells outside cost ``+inf``. A band too narrow to connect the corners gives ``+inf``.
        backend: ``"auto"`` (default: ``"numba"`` for CPU tensors when numba is importable, else ``"analytic"``),
            ``"numba"`` (compiled CPU kernels, parallel over the batch, analytic backward), ``"analytic"`` (the
            PyTorch anti-diagonal wavefront with analytic backward, any device; O(B·N·M) memory) or ``"autograd"``
            (plain autograd through the wavefront; slower, supports double backward). The three agree to rounding.

    Returns:
        ``[B]`` values ``R[b, n_b, m_b]`` (a 0-d tensor for a 2-D input).
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if relaxation not in ("logsumexp", "prob"):
        raise ValueError(f"relaxation must be 'logsumexp' or 'prob', got {relaxation!r}")
    squeeze = cost.ndim == 2
    masked, n_len, m_len, _ = _prepare(cost, x_lengths, y_lengths, band)
    if backend == "auto":
        backend = "numba" if masked.device.type == "cpu" and numba_available() else "analytic"
    if backend == "numba":
        if masked.device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU tensors only, got a cost on {masked.device}")
        if not numba_available():
            raise ImportError("backend='numba' needs numba (pip install numba); backend='analytic' needs nothing")
        out = _NumbaSoftDTWFunction.apply(masked, n_len, m_len, float(gamma), relaxation)
    elif backend == "analytic":
        out = _SoftDTWFunction.apply(masked, n_len, m_len, float(gamma), relaxation)
    elif backend == "autograd":
        out = _autograd_soft_dtw(masked, n_len, m_len, float(gamma), relaxation)
    else:
        raise ValueError(f"backend must be 'auto', 'numba', 'analytic' or 'autograd', got {backend!r}")
    return out[0] if squeeze else out


def soft_alignment(
    cost: Tensor,
    gamma: float = 1.0,
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    relaxation: Relaxation = "logsumexp",
) -> Tensor:
    """Expected alignment ``∂ softDTW / ∂ cost`` ``[B, N, M]`` (for ``"logsumexp"``: a distribution over paths,
    rows/columns of each cell's probability of being on the path; ``γ = 0``: the optimal path as 0/1)."""
    with torch.enable_grad():
        c = cost.detach().clone().requires_grad_(True)
        value = soft_dtw(c, gamma, x_lengths=x_lengths, y_lengths=y_lengths, relaxation=relaxation)
        (grad,) = torch.autograd.grad(value.sum(), c)
    return grad


def dtw_path(
    cost: Tensor, *, x_lengths: Tensor | None = None, y_lengths: Tensor | None = None
) -> tuple[Tensor, list[np.ndarray]]:
    """Classic DTW (``γ → 0``) with the optimal warping path of each sample.

    Args:
        cost: ``[B, N, M]`` or ``[N, M]``.
        x_lengths: valid rows per sample.
        y_lengths: valid columns per sample.

    Returns:
        ``(values [B], paths)``; ``paths[b]`` is an int array ``[L, 2]`` of 0-based ``(i, j)`` from ``(0, 0)`` to
        ``(n_b - 1, m_b - 1)``. Ties prefer the diagonal step.
    """
    squeeze = cost.ndim == 2
    masked, n_len, m_len, transposed = _prepare(cost.detach(), x_lengths, y_lengths, None)
    s_t = _forward_table(_skew_cost(masked), 0.0, "logsumexp")
    values = _read_end(s_t, n_len, m_len).to(cost.dtype)
    s = s_t.cpu().numpy()
    paths = []
    for k, (nb, mb) in enumerate(zip(n_len.tolist(), m_len.tolist())):
        i, j, path = nb, mb, [(nb - 1, mb - 1)]
        table = s[k]
        while (i, j) != (1, 1):
            cand = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
            vals = [table[a + c, a] if a >= 1 and c >= 1 else np.inf for a, c in cand]
            i, j = cand[int(np.argmin(vals))]
            path.append((i - 1, j - 1))
        arr = np.asarray(path[::-1], dtype=np.int64)
        paths.append(arr[:, ::-1].copy() if transposed else arr)
    return (values[0] if squeeze else values), paths


def soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    distance: str = "sqeuclidean",
) -> Tensor:
    """Soft-DTW divergence ``sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2`` (Blondel et al. 2021), ``[B]``; ≥ 0 and
    zero at ``x = y`` for the squared Euclidean cost."""
    dist = _DISTANCES[distance]
    xy = soft_dtw(dist(x, y), gamma, x_lengths=x_lengths, y_lengths=y_lengths)
    xx = soft_dtw(dist(x, x), gamma, x_lengths=x_lengths, y_lengths=x_lengths)
    yy = soft_dtw(dist(y, y), gamma, x_lengths=y_lengths, y_lengths=y_lengths)
    return xy - 0.5 * (xx + yy)


_DISTANCES = {"sqeuclidean": pairwise_sqeuclidean, "cosine": pairwise_cosine_distance}


class SoftDTW(nn.Module):
    """Soft-DTW between batches of sequences, as a module.

    Args:
        gamma: smoothing (0 = hard DTW).
        distance: ``"sqeuclidean"`` or ``"cosine"`` pairwise cost.
        relaxation: ``"logsumexp"`` or ``"prob"``.
        normalize: return the soft-DTW divergence (non-negative, zero for identical inputs).
        band: optional Sakoe–Chiba half-width, see :func:`soft_dtw`.

    Shapes:
        ``forward(x [B, N, D], y [B, M, D], x_lengths [B] | None, y_lengths [B] | None) -> [B]``.
    """

    def __init__(
        self,
        gamma: float = 1.0,
        distance: str = "sqeuclidean",
        relaxation: Relaxation = "logsumexp",
        normalize: bool = False,
        band: float | None = None,
    ) -> None:
        super().__init__()
        if distance not in _DISTANCES:
            raise ValueError(f"distance must be one of {sorted(_DISTANCES)}, got {distance!r}")
        self.gamma, self.distance, self.relaxation, self.normalize, self.band = (
            gamma, distance, relaxation, normalize, band)  # fmt: skip

    def _sdtw(self, a: Tensor, b: Tensor, la: Tensor | None, lb: Tensor | None) -> Tensor:
        cost = _DISTANCES[self.distance](a, b)
        return soft_dtw(cost, self.gamma, x_lengths=la, y_lengths=lb, relaxation=self.relaxation, band=self.band)

    def forward(self, x: Tensor, y: Tensor, x_lengths: Tensor | None = None, y_lengths: Tensor | None = None) -> Tensor:
        value = self._sdtw(x, y, x_lengths, y_lengths)
        if self.normalize:
            value = value - 0.5 * (self._sdtw(x, x, x_lengths, x_lengths) + self._sdtw(y, y, y_lengths, y_lengths))
        return value
