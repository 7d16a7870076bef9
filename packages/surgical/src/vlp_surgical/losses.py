"""Surgical losses: PeskaVLP procedure-aware soft-DTW alignment and OphCLIP silent-clip retrieval augmentation.

Level-wise InfoNCE (HecVL) uses core's :class:`vlp_core.losses.ClipLoss` / :class:`MultiPositiveClipLoss`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.losses import MultiPositiveClipLoss, dist_info, gather_variable, global_mean
from vlp_surgical.dtw import soft_dtw

__all__ = [
    "ProcedureDTWLoss",
    "SilentClipBank",
    "alignment_cost",
    "chunked_topk",
    "negative_orders",
    "nt_xent",
    "retrieval_positives",
]

NormAxis = Literal["text", "frame", "none"]


def alignment_cost(frames: Tensor, texts: Tensor, temperature: float = 0.1, axis: NormAxis = "text",
                   text_mask: Tensor | None = None) -> Tensor:  # fmt: skip
    """Cost ``[B, T, N]`` between frame embeddings ``[B, T, D]`` and ordered text embeddings ``[B, N, D]``.

    Args:
        frames: frame (or segment) embeddings.
        texts: child text embeddings, in procedure order.
        temperature: softmax temperature on cosine similarities.
        axis: ``"text"``: ``-log softmax`` over texts for each frame (PeskaVLP paper, Eq. 2); ``"frame"``: over frames
            for each text (the released code); ``"none"``: ``1 - cos``.
        text_mask: ``[B, N]`` valid texts (padding excluded from the text-axis softmax).
    """
    sim = F.normalize(frames, dim=-1) @ F.normalize(texts, dim=-1).transpose(1, 2)
    if axis == "none":
        return 1.0 - sim
    logits = sim / temperature
    if axis == "text":
        if text_mask is not None:
            logits = logits.masked_fill(~text_mask[:, None, :], float("-inf"))
        return -torch.log_softmax(logits, dim=2).nan_to_num(posinf=0.0, neginf=0.0)
    if axis == "frame":
        return -torch.log_softmax(logits, dim=1)
    raise ValueError(f"axis must be 'text', 'frame' or 'none', got {axis!r}")


def negative_orders(n: Tensor, kind: str, generator: torch.Generator | None = None, window: int = 2) -> Tensor:
    """Permutations ``[B, Nmax]`` of each sample's first ``n[b]`` positions (padding keeps its place).

    ``"reverse"`` reverses, ``"shuffle"`` draws a random permutation that differs from the identity whenever
    ``n > 1``, ``"local"`` swaps neighbours inside windows of ``window`` (a local permutation).
    """
    b, nmax = n.numel(), int(n.max())
    ar = torch.arange(nmax, device=n.device).expand(b, nmax)
    valid = ar < n[:, None]
    if kind == "reverse":
        perm = (n[:, None] - 1 - ar).where(valid, ar)
    elif kind == "shuffle":
        keys = torch.rand(b, nmax, generator=generator).to(n.device).masked_fill(~valid, 2.0)
        perm = keys.argsort(1)
        same = (perm == ar).all(1) & (n > 1)
        perm[same] = (n[same, None] - 1 - ar[same]).where(valid[same], ar[same])  # fall back to reversal
    elif kind == "local":
        blk = ar // window
        pos = ar % window
        start = blk * window
        size = (n[:, None] - start).clamp(max=window)
        perm = (start + size - 1 - pos).where(valid, ar)
    else:
        raise ValueError(f"unknown negative kind {kind!r}; choose reverse, shuffle or local")
    return perm


class ProcedureDTWLoss(nn.Module):
    """PeskaVLP procedure-aware alignment: the soft-DTW cost of the true text order must beat permuted orders.

    ``a = DTW(C(frames, texts))``, ``b_k = DTW(C(frames, texts[π_k]))``; loss ``= w_pos · mean(a) +
    mean_k mean(max(a - b_k + margin, 0))``, DTW values divided by the number of frames (``length_normalize``) so
    the margin is per frame.

    Args:
        gamma: soft-DTW smoothing.
        relaxation: ``"prob"`` (PeskaVLP) or ``"logsumexp"``.
        temperature: of the cosine softmax in the cost.
        axis: cost normalisation axis: ``"text"`` (paper), ``"frame"`` (released code) or ``"none"``.
        negatives: permutations used as negatives (``reverse``, ``shuffle``, ``local``).
        margin: hinge margin ϕ.
        positive_weight: weight of the direct positive-cost term (released code: 1, paper: 0).
        length_normalize: divide DTW values by the number of frames.

    Shapes:
        ``forward(frames [B, T, D], frame_mask [B, T], texts [B, N, D], text_mask [B, N])``; samples with fewer than
        two texts have no meaningful negative and are ignored.
    """

    def __init__(
        self,
        gamma: float = 0.1,
        relaxation: Literal["prob", "logsumexp"] = "prob",
        temperature: float = 0.1,
        axis: NormAxis = "text",
        negatives: tuple[str, ...] = ("reverse", "shuffle"),
        margin: float = 0.1,
        positive_weight: float = 0.0,
        length_normalize: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.gamma, self.relaxation, self.temperature, self.axis = gamma, relaxation, temperature, axis
        self.negatives, self.margin, self.positive_weight = tuple(negatives), margin, positive_weight
        self.length_normalize = length_normalize
        self.generator = torch.Generator().manual_seed(seed)

    def dtw(self, frames: Tensor, frame_len: Tensor, texts: Tensor, text_len: Tensor) -> Tensor:
        tmask = torch.arange(texts.shape[1], device=texts.device)[None] < text_len[:, None]
        cost = alignment_cost(frames, texts, self.temperature, self.axis, tmask)
        value = soft_dtw(cost, self.gamma, x_lengths=frame_len, y_lengths=text_len, relaxation=self.relaxation)
        return value / frame_len.to(value.dtype) if self.length_normalize else value

    def forward(self, frames: Tensor, frame_mask: Tensor, texts: Tensor, text_mask: Tensor) -> dict[str, Tensor]:
        frame_len, text_len = frame_mask.sum(1), text_mask.sum(1)
        keep = (text_len >= 2) & (frame_len >= 1)
        rank, world = dist_info()
        zero = frames.sum() * 0.0
        if not bool(keep.any()):
            # Under torch.distributed this rank still joins the global mean (other ranks may have samples).
            loss = global_mean(zero, torch.zeros(()), rank, world) if world > 1 else zero
            return {"loss": loss, "dtw_pos": zero.detach(), "dtw_gap": zero.detach()}
        frames, texts, frame_len, text_len = frames[keep], texts[keep], frame_len[keep], text_len[keep]
        a = self.dtw(frames, frame_len, texts, text_len)
        hinge, gaps = [], []
        for kind in self.negatives:
            perm = negative_orders(text_len, kind, self.generator)
            neg = torch.gather(texts, 1, perm[..., None].expand_as(texts))
            b = self.dtw(frames, frame_len, neg, text_len)
            hinge.append(F.relu(a - b + self.margin).sum())
            gaps.append((b - a).detach().mean())
        # Sums over this rank's samples, divided by the number of samples on all ranks: under DDP the averaged
        # loss and gradients equal the single-process mean over the concatenated batch.
        local = torch.stack(hinge).mean() + self.positive_weight * a.sum()
        loss = global_mean(local, keep.sum(), rank, world)
        return {"loss": loss, "dtw_pos": a.detach().mean(), "dtw_gap": torch.stack(gaps).mean()}


# ------------------------------------------------------------------------------------ visual self-supervision
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent between two views ``[B, D]`` (row ``i`` of both = one clip): each of the ``2B`` embeddings
    must pick its other view among the ``2B - 1`` others (cosine / ``temperature``); mean over the ``2B`` anchors.

    Under ``torch.distributed`` both views are gathered from every rank (variable sizes, with gradient) and each
    rank scores its own anchors against all ``2 Σ_r B_r`` embeddings, so the DDP-averaged loss and gradients equal the
    single-process loss on the concatenated batch; a rank may then hold fewer than two (even zero) items.
    """
    rank, world = dist_info()
    if z1.shape != z2.shape or (world == 1 and z1.shape[0] < 2):
        raise ValueError(f"nt_xent needs two views of the same >= 2 items, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    q1, q2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    all1, sizes = gather_variable(q1, rank, world)
    all2, _ = gather_variable(q2, rank, world)
    n, off = all1.shape[0], sum(sizes[:rank])
    idx = torch.arange(b, device=z1.device) + off
    own = torch.cat((idx, idx + n))  # each anchor's own column in [view 1 of all ranks; view 2 of all ranks]
    logits = torch.cat((q1, q2)) @ torch.cat((all1, all2)).T / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(2 * b, device=z1.device), own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    target = torch.cat((idx + n, idx))
    loss = F.cross_entropy(logits, target, reduction="sum")
    return global_mean(loss, torch.tensor(float(2 * b)), rank, world)


# ------------------------------------------------------------------------------------------- OphCLIP memory bank
def chunked_topk(query: Tensor, bank: Tensor, k: int, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Exact maximum-inner-product top-``k`` of ``query [Q, D]`` over ``bank [M, D]``, ``chunk_size`` rows of the bank
    at a time (memory ``Q × (chunk_size + k)``). Returns ``(scores [Q, k], indices [Q, k])``, best first."""
    k = min(k, bank.shape[0])
    best_s = query.new_full((query.shape[0], 0), float("-inf"))
    best_i = torch.zeros(query.shape[0], 0, dtype=torch.long, device=query.device)
    for start in range(0, bank.shape[0], chunk_size):
        s = query @ bank[start : start + chunk_size].T
        idx = torch.arange(start, start + s.shape[1], device=query.device).expand_as(s)
        cat_s, cat_i = torch.cat((best_s, s), 1), torch.cat((best_i, idx), 1)
        best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
        best_i = cat_i.gather(1, pos)
    return best_s, best_i


class SilentClipBank(nn.Module):
    """Memory bank of embeddings of unnarrated ("silent") clips (OphCLIP-style retrieval augmentation).

    The bank holds detached, L2-normalised visual embeddings of silent clips; :meth:`refresh` re-encodes them
    every ``refresh_every`` training steps (the encoder drifts), :meth:`retrieve` returns for each query the top-``k``
    bank entries by exact inner product (chunked).

    Args:
        dim: embedding width.
        k: neighbours per query.
        refresh_every: steps between refreshes (:meth:`due`).
        chunk_size: bank rows scored at a time.
    """

    def __init__(self, dim: int, k: int = 2, refresh_every: int = 50, chunk_size: int = 4096) -> None:
        super().__init__()
        self.k, self.refresh_every, self.chunk_size = k, refresh_every, chunk_size
        self.register_buffer("bank", torch.zeros(0, dim), persistent=False)
        self.last_refresh = -1

    def due(self, step: int) -> bool:
        return self.last_refresh < 0 or step - self.last_refresh >= self.refresh_every

    @torch.no_grad()
    def refresh(self, embeddings: Tensor, step: int) -> None:
        self.bank = F.normalize(embeddings.detach(), dim=-1)
        self.last_refresh = step

    def retrieve(self, query: Tensor) -> tuple[Tensor, Tensor]:
        if self.bank.shape[0] == 0:
            raise RuntimeError("SilentClipBank is empty: call refresh() first")
        return chunked_topk(F.normalize(query.detach(), dim=-1), self.bank, self.k, self.chunk_size)


def retrieval_positives(
    text: Tensor, clips: Tensor, bank: SilentClipBank, loss: MultiPositiveClipLoss, bank_weight: float = 0.5
) -> dict[str, Tensor]:
    """Text ↔ clip InfoNCE where each narration's top-``k`` silent clips (retrieved with the narration's own clip
    embedding) join the candidates as extra positives of weight ``bank_weight`` (the paired clip has weight 1).

    Shapes: ``text [B, D]``, ``clips [B, D]``; bank entries are constants (no gradient), as in a memory bank.
    """
    scores, idx = bank.retrieve(clips)
    b, k = idx.shape
    candidates = torch.cat((clips, bank.bank[idx.reshape(-1)].to(clips.dtype)), 0)
    pos = torch.zeros(b, b + b * k, dtype=text.dtype, device=text.device)
    pos[torch.arange(b), torch.arange(b)] = 1.0
    rows = torch.arange(b, device=text.device).repeat_interleave(k)
    pos[rows, b + torch.arange(b * k, device=text.device)] = bank_weight
    out = loss(text, candidates, pos)
    out["retrieved_sim"] = scores.mean().detach()
    return out
