"""Memory-linear (chunked, recompute-in-backward) kernels for contrastive losses.

Scoring ``n`` queries against ``m`` keys materialises an ``n x m`` logit matrix; autograd would keep it (and its
softmax) alive until backward, so memory grows quadratically with the batch. These autograd functions process
``chunk`` query rows at a time and recompute each block in backward, so peak memory is ``O(chunk * m)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["chunked_cross_entropy", "chunked_sigmoid_loss", "chunked_symmetric_cross_entropy", "normalize"]


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """L2-normalise the last dimension, rejecting non-finite input with a clear error."""
    if not torch.isfinite(x).all():
        raise ValueError(f"embeddings contain NaN or Inf (shape {tuple(x.shape)}); check the tower outputs")
    return torch.nn.functional.normalize(x, dim=-1, eps=eps)


def _backward_blocks(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    chunk: int,
    needs: tuple[bool, ...],
    logit_grad: Callable[[int, Tensor], Tensor],
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor]:
    """Shared backward of the chunked kernels: recompute each row block's similarities, get dL/dlogits from
    ``logit_grad(row_offset, sim)`` and accumulate the gradients of ``q``, ``k``, ``scale`` and of an additive
    logit bias (``sum dL/dlogits``)."""
    gq = torch.empty_like(q) if needs[0] else None
    gk = torch.zeros_like(k) if needs[1] else None
    gs = torch.zeros_like(scale) if needs[2] else None
    g_sum = q.new_zeros(())
    for s in range(0, q.shape[0], chunk):
        qc = q[s : s + chunk]
        sim = qc @ k.T
        g = logit_grad(s, sim)
        g_sum += g.sum()
        if gs is not None:
            gs += (g * sim).sum()
        g = g * scale
        if gq is not None:
            gq[s : s + chunk] = g @ k
        if gk is not None:
            gk.addmm_(g.T, qc)
    return gq, gk, gs, g_sum


class _ChunkedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, targets: Tensor, chunk: int) -> Tensor:
        n = q.shape[0]
        lse = q.new_empty(n)
        pos = q.new_empty(n)
        for s in range(0, n, chunk):
            logits = scale * (q[s : s + chunk] @ k.T)
            lse[s : s + chunk] = torch.logsumexp(logits, dim=1)
            pos[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1)
        ctx.save_for_backward(q, k, scale, targets, lse)
        ctx.chunk = chunk
        return (lse - pos).mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, scale, targets, lse = ctx.saved_tensors
        n = q.shape[0]

        def logit_grad(s: int, sim: Tensor) -> Tensor:
            # d(lse - pos)/d(logits) = softmax - onehot; the mean over n rows gives the 1/n factor.
            g = torch.exp(scale * sim - lse[s : s + sim.shape[0], None])
            g.scatter_add_(1, targets[s : s + sim.shape[0], None], -torch.ones_like(g[:, :1]))
            return g * (grad / n)

        gq, gk, gs, _ = _backward_blocks(q, k, scale, ctx.chunk, ctx.needs_input_grad, logit_grad)
        return gq, gk, gs, None, None


def chunked_cross_entropy(q: Tensor, k: Tensor, scale: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """Mean cross-entropy of logits ``scale * q @ k.T`` against ``targets``, in row chunks.

    Args:
        q: queries ``[n, D]``.
        k: keys ``[m, D]``.
        scale: logit scale, a 0-D or ``[1]`` tensor (already exponentiated).
        targets: index of the positive key for each query ``[n]`` (long).
        chunk: rows per block; peak memory is ``O(chunk * m)``.

    Returns:
        Scalar loss, equal to ``F.cross_entropy(scale * q @ k.T, targets)``.
    """
    return _ChunkedCE.apply(q, k, scale.reshape(()), targets, int(chunk))


class _ChunkedSymmetricCE(torch.autograd.Function):
    # Both CLIP directions from one pass over row blocks: row log-sum-exps directly, column log-sum-exps merged
    # online across blocks, so each block's matmul serves both directions (4 matmuls instead of 8 for two passes).
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, chunk: int) -> Tensor:
        n = a.shape[0]
        row_lse = a.new_empty(n)
        col_lse = a.new_full((n,), float("-inf"))
        diag = a.new_empty(n)
        for s in range(0, n, chunk):
            block = scale * (a[s : s + chunk] @ b.T)
            rows = torch.arange(block.shape[0], device=a.device)
            row_lse[s : s + chunk] = torch.logsumexp(block, dim=1)
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(block, dim=0))
            diag[s : s + chunk] = block[rows, rows + s]
        ctx.save_for_backward(a, b, scale, row_lse, col_lse)
        ctx.chunk = chunk
        return 0.5 * ((row_lse - diag).mean() + (col_lse - diag).mean())

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b, scale, row_lse, col_lse = ctx.saved_tensors
        n = a.shape[0]

        def logit_grad(s: int, sim: Tensor) -> Tensor:
            block = scale * sim
            g = torch.exp(block - row_lse[s : s + sim.shape[0], None]) + torch.exp(block - col_lse[None, :])
            rows = torch.arange(g.shape[0], device=g.device)
            g[rows, rows + s] -= 2.0
            return g * (grad / (2 * n))

        ga, gb, gs, _ = _backward_blocks(a, b, scale, ctx.chunk, ctx.needs_input_grad, logit_grad)
        return ga, gb, gs, None


def chunked_symmetric_cross_entropy(a: Tensor, b: Tensor, scale: Tensor, chunk: int) -> Tensor:
    """CLIP loss ``(CE(s a bᵀ, I) + CE(s b aᵀ, I)) / 2`` for square paired batches, in row chunks.

    Args:
        a: ``[n, D]``; row ``i`` pairs with row ``i`` of ``b``.
        b: ``[n, D]``.
        scale: logit scale (0-D or ``[1]``, already exponentiated).
        chunk: rows per block; peak memory ``O(chunk * n)``.
    """
    if a.shape != b.shape:
        raise ValueError(f"symmetric CLIP loss needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _ChunkedSymmetricCE.apply(a, b, scale.reshape(()), int(chunk))


class _ChunkedSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, offset: int, chunk: int) -> Tensor:
        n = q.shape[0]
        total = q.new_zeros(())
        for s in range(0, n, chunk):
            logits = scale * (q[s : s + chunk] @ k.T) + bias
            # Every pair as a negative, -log sigmoid(-x) = softplus(x); the diagonal is then corrected with
            # softplus(-x) - softplus(x) = -x, so no label matrix is materialised.
            total = total + torch.nn.functional.softplus(logits).sum()
            rows = torch.arange(s, min(s + chunk, n), device=q.device)
            total = total - logits[rows - s, rows + offset].sum()
        ctx.save_for_backward(q, k, scale, bias)
        ctx.offset, ctx.chunk = offset, chunk
        return total / n

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, scale, bias = ctx.saved_tensors
        n, offset = q.shape[0], ctx.offset

        def logit_grad(s: int, sim: Tensor) -> Tensor:
            g = torch.sigmoid(scale * sim + bias)  # d softplus(x)/dx
            rows = torch.arange(s, s + sim.shape[0], device=g.device)
            g[rows - s, rows + offset] -= 1.0
            return g * (grad / n)

        gq, gk, gs, g_sum = _backward_blocks(q, k, scale, ctx.chunk, ctx.needs_input_grad, logit_grad)
        gb = g_sum.reshape(bias.shape) if ctx.needs_input_grad[3] else None
        return gq, gk, gs, gb, None, None


def chunked_sigmoid_loss(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, offset: int, chunk: int) -> Tensor:
    """SigLIP loss of queries ``q [n, D]`` against keys ``k [m, D]`` where query ``i`` matches key ``i + offset``.

    Returns ``-(1/n) * sum_ij log sigmoid(z_ij * (scale * q_i.k_j + bias))`` with ``z = +1`` on the matched pairs
    and ``-1`` elsewhere, computed in row chunks with ``O(chunk * m)`` peak memory.
    """
    return _ChunkedSigmoid.apply(q, k, scale.reshape(()), bias.reshape(()), int(offset), int(chunk))
