"""CPU fast path of :func:`vlp_surgical.dtw.soft_dtw`: numba kernels, parallel over the batch.

Same recursion, relaxations, sentinel convention and analytic backward as the PyTorch wavefront (``dtw.py``), but one
compiled row-major double loop per sample that only visits each sample's own ``[n_b, m_b]`` block, so padding costs
nothing; samples run in parallel (``prange``) from ``PARALLEL_MIN_CELLS`` DP cells on, serially below. Imported lazily; ``AVAILABLE`` is False when numba is missing.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a declared dependency; the torch wavefront is the fallback
    AVAILABLE = False

__all__ = ["AVAILABLE", "backward", "forward"]

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _exps(r0, r1, r2, m, gamma):  # pragma: no cover - compiled
        """exp((m - r_k) / gamma); the minimum's own term is exactly 1 (one exp saved per cell)."""
        e0 = 1.0 if r0 == m else np.exp((m - r0) / gamma)
        e1 = 1.0 if r1 == m else np.exp((m - r1) / gamma)
        e2 = 1.0 if r2 == m else np.exp((m - r2) / gamma)
        return e0, e1, e2

    @njit(cache=True, inline="always")
    def _softmin(r0, r1, r2, gamma, prob):  # pragma: no cover - compiled
        m = min(r0, min(r1, r2))
        if gamma == 0.0:
            return m
        e0, e1, e2 = _exps(r0, r1, r2, m, gamma)
        s = e0 + e1 + e2
        if prob:
            return (e0 * r0 + e1 * r1 + e2 * r2) / s
        return m - gamma * np.log(s)

    @njit(cache=True)
    def _forward_one(k, cost, r, out, n_len, m_len, gamma, prob, big):  # pragma: no cover - compiled
        r[k, 0, 0] = 0.0
        for i in range(1, n_len[k] + 1):
            for j in range(1, m_len[k] + 1):
                c = min(cost[k, i - 1, j - 1], big)
                r[k, i, j] = c + _softmin(r[k, i - 1, j - 1], r[k, i - 1, j], r[k, i, j - 1], gamma, prob)
        out[k] = r[k, n_len[k], m_len[k]]

    @njit(cache=True)
    def _backward_one(k, r, grad, n_len, m_len, grad_out, gamma, prob):  # pragma: no cover - compiled
        e = np.zeros((n_len[k] + 1, m_len[k] + 1), dtype=r.dtype)
        e[n_len[k], m_len[k]] = grad_out[k]
        for i in range(n_len[k], 0, -1):
            for j in range(m_len[k], 0, -1):
                g = e[i, j]
                grad[k, i - 1, j - 1] = g
                if g == 0.0:
                    continue
                r0, r1, r2 = r[k, i - 1, j - 1], r[k, i - 1, j], r[k, i, j - 1]
                mn = min(r0, min(r1, r2))
                if gamma == 0.0:  # one-hot sub-gradient, ties to (diagonal, up, left) in that order
                    if r0 == mn:
                        e[i - 1, j - 1] += g
                    elif r1 == mn:
                        e[i - 1, j] += g
                    else:
                        e[i, j - 1] += g
                    continue
                e0, e1, e2 = _exps(r0, r1, r2, mn, gamma)
                s = e0 + e1 + e2
                p0, p1, p2 = e0 / s, e1 / s, e2 / s
                if prob:  # d/dr_k sum_l p_l r_l = p_k (1 - (r_k - mu) / gamma)
                    mu = p0 * r0 + p1 * r1 + p2 * r2
                    p0 = p0 * (1.0 - (r0 - mu) / gamma)
                    p1 = p1 * (1.0 - (r1 - mu) / gamma)
                    p2 = p2 * (1.0 - (r2 - mu) / gamma)
                e[i - 1, j - 1] += p0 * g
                e[i - 1, j] += p1 * g
                e[i, j - 1] += p2 * g

    @njit(cache=True)
    def _forward_serial(cost, r, out, n_len, m_len, gamma, prob, big):  # pragma: no cover - compiled
        for k in range(cost.shape[0]):
            _forward_one(k, cost, r, out, n_len, m_len, gamma, prob, big)

    @njit(cache=True, parallel=True)
    def _forward_parallel(cost, r, out, n_len, m_len, gamma, prob, big):  # pragma: no cover - compiled
        for k in prange(cost.shape[0]):
            _forward_one(k, cost, r, out, n_len, m_len, gamma, prob, big)

    @njit(cache=True)
    def _backward_serial(r, grad, n_len, m_len, grad_out, gamma, prob):  # pragma: no cover - compiled
        for k in range(r.shape[0]):
            _backward_one(k, r, grad, n_len, m_len, grad_out, gamma, prob)

    @njit(cache=True, parallel=True)
    def _backward_parallel(r, grad, n_len, m_len, grad_out, gamma, prob):  # pragma: no cover - compiled
        for k in prange(r.shape[0]):
            _backward_one(k, r, grad, n_len, m_len, grad_out, gamma, prob)


#: Threads only pay off for large enough batches: each parallel region costs a fork/join (tens of µs on an idle
#: machine, milliseconds on one with more runnable threads than cores); below this many DP cells the kernels run on
#: one thread. 2^16 measured on an idle 2-core machine: B=64, N=M=64 fwd+bwd 11.7 ms serial -> 7.6 ms parallel.
PARALLEL_MIN_CELLS = 1 << 16


def _parallel(cells: int) -> bool:
    import numba

    return cells >= PARALLEL_MIN_CELLS and numba.get_num_threads() > 1


def forward(cost: np.ndarray, n_len: np.ndarray, m_len: np.ndarray, gamma: float, prob: bool,
            big: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Table ``R [B, N + 1, M + 1]`` (``big`` = unreachable) and values ``R[b, n_b, m_b]`` of a masked cost."""
    cost = np.ascontiguousarray(cost)
    b, n, m = cost.shape
    r = np.full((b, n + 1, m + 1), big, dtype=cost.dtype)
    out = np.empty(b, dtype=cost.dtype)
    kernel = _forward_parallel if _parallel(int(n_len @ m_len)) else _forward_serial
    kernel(cost, r, out, n_len, m_len, float(gamma), bool(prob), cost.dtype.type(big))
    return r, out


def backward(r: np.ndarray, n_len: np.ndarray, m_len: np.ndarray, grad_out: np.ndarray, gamma: float,
             prob: bool) -> np.ndarray:  # fmt: skip
    """``∂L/∂cost [B, N, M]`` from the forward table and ``∂L/∂value [B]`` (zero outside each sample's block)."""
    grad = np.zeros((r.shape[0], r.shape[1] - 1, r.shape[2] - 1), dtype=r.dtype)
    kernel = _backward_parallel if _parallel(int(n_len @ m_len)) else _backward_serial
    kernel(r, grad, n_len, m_len, np.ascontiguousarray(grad_out, dtype=r.dtype), float(gamma), bool(prob))
    return grad
