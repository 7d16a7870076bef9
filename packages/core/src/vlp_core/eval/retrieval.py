"""Chunked, multi-positive retrieval metrics (R@K, median and mean rank) with bounded memory.

For each query the *rank* is ``1 + #{valid gallery items that score strictly higher than the query's best
positive}``, where the best positive is the positive with the highest similarity (a query with several captions
is ranked by its best one) and valid items are all non-positive gallery items, minus the query itself when
``exclude_self=True``.

Memory: similarities are computed block by block (``chunk_size`` queries x ``gallery_chunk_size`` gallery items),
so peak extra memory is O(chunk_size x gallery_chunk_size + N + M + number of positive pairs), never N x M
(unlike open_clip's ``get_clip_metrics`` and torchmetrics' retrieval metrics, which store every score).

Ties (deterministic): with ``ties="optimistic"`` (default) a non-positive item scoring *exactly* the same as the
best positive does not push it down; with ``ties="pessimistic"`` it does. The positive scores are taken from the
same block matmul as the scores they are compared with, so an exact tie is decided identically whatever the chunk
sizes. Optimistic ties reward collapsed embeddings (all scores equal -> rank 1), so a warning is issued when more
than 1 % of queries tie with a non-positive item.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from vlp_core.eval._checks import as_tensor, check_embeddings

__all__ = ["retrieval_ranks", "retrieval_metrics", "metrics_from_ranks", "bidirectional_retrieval"]

Positives = Tensor | Sequence[Sequence[int]] | None


def _ids_to_codes(query_ids: Any, gallery_ids: Any) -> tuple[Tensor, Tensor]:
    q = query_ids if isinstance(query_ids, Tensor) else np.asarray(query_ids)
    g = gallery_ids if isinstance(gallery_ids, Tensor) else np.asarray(gallery_ids)
    if isinstance(q, Tensor) and isinstance(g, Tensor) and not q.is_floating_point() and not g.is_floating_point():
        return q.detach().cpu().long().flatten(), g.detach().cpu().long().flatten()
    # Arbitrary hashable ids (strings, ...): factorise jointly so equal ids get equal integer codes.
    qa = q.detach().cpu().numpy() if isinstance(q, Tensor) else q
    ga = g.detach().cpu().numpy() if isinstance(g, Tensor) else g
    codes, _ = pd.factorize(np.concatenate([qa.ravel().astype(object), ga.ravel().astype(object)]))
    codes_t = torch.as_tensor(codes, dtype=torch.long)
    return codes_t[: qa.size], codes_t[qa.size :]


def _positives_csr(
    positives: Positives, n_query: int, n_gallery: int, query_ids: Any, gallery_ids: Any
) -> tuple[Tensor, Tensor]:
    """Positives as CSR: ``idx[ptr[i]:ptr[i+1]]`` are the gallery indices of query i's positives."""
    if query_ids is not None or gallery_ids is not None:
        if positives is not None or query_ids is None or gallery_ids is None:
            raise ValueError("give either `positives` or both `query_ids` and `gallery_ids`")
        q, g = _ids_to_codes(query_ids, gallery_ids)
        if q.numel() != n_query or g.numel() != n_gallery:
            raise ValueError(
                f"query_ids/gallery_ids have {q.numel()}/{g.numel()} entries for {n_query} queries "
                f"and {n_gallery} gallery items"
            )
        g_sorted, order = torch.sort(g, stable=True)
        lo = torch.searchsorted(g_sorted, q, right=False)
        hi = torch.searchsorted(g_sorted, q, right=True)
        counts = hi - lo
        ptr = torch.zeros(n_query + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(counts, 0)
        rows = torch.repeat_interleave(torch.arange(n_query), counts)
        offsets = torch.arange(int(ptr[-1])) - ptr[rows]
        return ptr, order[lo[rows] + offsets]
    if positives is None:
        if n_query != n_gallery:
            raise ValueError(f"positives=None means query i matches gallery i, but N={n_query} != M={n_gallery}")
        return torch.arange(n_query + 1), torch.arange(n_query)
    if isinstance(positives, Tensor | np.ndarray):
        pos = as_tensor(positives, "positives").cpu()
        if pos.ndim == 2:
            if tuple(pos.shape) != (n_query, n_gallery):
                raise ValueError(f"positive mask must have shape [{n_query}, {n_gallery}], got {tuple(pos.shape)}")
            rows, cols = (pos != 0).nonzero(as_tuple=True)  # row-major, so already grouped by query
            ptr = torch.zeros(n_query + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_query), 0)
            return ptr, cols
        if pos.ndim != 1 or pos.shape[0] != n_query or pos.is_floating_point() or pos.dtype == torch.bool:
            raise ValueError(
                f"positive indices must be an integer tensor of shape [{n_query}], got {tuple(pos.shape)} {pos.dtype}"
            )
        pos = pos.long()
        keep = pos >= 0  # -1 marks a query without a positive
        ptr = torch.zeros(n_query + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(keep.long(), 0)
        return _validated(ptr, pos[keep], n_gallery)
    lists = [list(map(int, p)) for p in positives]
    if len(lists) != n_query:
        raise ValueError(f"positives has {len(lists)} entries for {n_query} queries")
    ptr = torch.zeros(n_query + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor([len(p) for p in lists], dtype=torch.long), 0)
    idx = torch.tensor([i for p in lists for i in p], dtype=torch.long)
    return _validated(ptr, idx, n_gallery)


def _validated(ptr: Tensor, idx: Tensor, n_gallery: int) -> tuple[Tensor, Tensor]:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_gallery):
        raise ValueError(
            f"positive gallery indices must lie in [0, {n_gallery}), got range [{int(idx.min())}, {int(idx.max())}]"
        )
    return ptr, idx


def _drop_self(ptr: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    rows = torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff())
    keep = idx != rows
    new_ptr = torch.zeros_like(ptr)
    new_ptr[1:] = torch.cumsum(torch.bincount(rows[keep], minlength=ptr.numel() - 1), 0)
    return new_ptr, idx[keep]


@torch.no_grad()
def retrieval_ranks(
    query: Tensor,
    gallery: Tensor,
    positives: Positives = None,
    *,
    query_ids: Any = None,
    gallery_ids: Any = None,
    exclude_self: bool = False,
    chunk_size: int = 1024,
    gallery_chunk_size: int = 8192,
    normalize: bool = True,
    ties: str = "optimistic",
) -> Tensor:
    """1-based rank of each query's best positive in the gallery, computed block-wise.

    Args:
        query: Query embeddings [N, D].
        gallery: Gallery embeddings [M, D].
        positives: Which gallery items are correct for each query, one of: None (query i <-> gallery i, needs
            N == M); an integer tensor [N] of gallery indices (-1 = none); a list of N lists of gallery indices
            (multi-positive); a bool mask [N, M] (convenient for small sets only). Alternatively use the ids below.
        query_ids: Group id per query [N] (e.g. image id of each caption); with ``gallery_ids`` [M], gallery item j
            is a positive of query i iff the ids are equal. Memory-efficient multi-positive form.
        gallery_ids: See ``query_ids``.
        exclude_self: Query and gallery are the same set (N == M, item i is query i): never rank gallery item i for
            query i, and drop it from query i's positives.
        chunk_size: Queries per block.
        gallery_chunk_size: Gallery items per block.
        normalize: L2-normalise both sides first (cosine similarity); False = raw dot product.
        ties: "optimistic" (equal scores do not count against the positive) or "pessimistic".

    Returns:
        Long tensor [N] of ranks (1 = best positive is the top item); -1 for queries without any positive
        (these are ignored by :func:`metrics_from_ranks`).
    """
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties must be 'optimistic' or 'pessimistic', got {ties!r}")
    if chunk_size < 1 or gallery_chunk_size < 1:
        raise ValueError("chunk sizes must be positive")
    q = check_embeddings(query, "query embeddings")
    g = check_embeddings(gallery, "gallery embeddings").to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    n, m = q.shape[0], g.shape[0]
    if exclude_self and n != m:
        raise ValueError(f"exclude_self=True needs the same set as query and gallery, got N={n}, M={m}")
    if exclude_self and positives is None and query_ids is None:
        raise ValueError(
            "exclude_self=True with positives=None would leave every query without a positive; "
            "pass `positives` or `query_ids`/`gallery_ids`"
        )
    if normalize:
        q, g = F.normalize(q, dim=-1), F.normalize(g.to(q.dtype), dim=-1)
    else:
        g = g.to(q.dtype)
    ptr, idx = _positives_csr(positives, n, m, query_ids, gallery_ids)
    had_pos = ptr.diff() > 0
    if exclude_self:
        ptr, idx = _drop_self(ptr, idx)
    if bool((~had_pos).any()):
        warnings.warn(
            f"{int((~had_pos).sum())} of {n} queries have no positive in the gallery; they are ignored", stacklevel=2
        )

    device = q.device
    ranks = torch.full((n,), -1, dtype=torch.long)
    n_tied = 0
    for q0 in range(0, n, chunk_size):
        q1 = min(n, q0 + chunk_size)
        qc = q[q0:q1]
        b = q1 - q0
        p_idx = idx[ptr[q0] : ptr[q1]].to(device)
        p_row = torch.repeat_interleave(torch.arange(b), ptr[q0 : q1 + 1].diff()).to(device)
        n_pos = ptr[q0 : q1 + 1].diff().to(device)

        # Pass 1: best positive score, from the same block matmul as pass 2 (bitwise-consistent tie handling).
        best = torch.full((b,), float("-inf"), dtype=q.dtype, device=device)
        for gc in torch.unique(p_idx // gallery_chunk_size).tolist():
            g0, g1 = gc * gallery_chunk_size, min(m, (gc + 1) * gallery_chunk_size)
            sims = qc @ g[g0:g1].T
            sel = (p_idx >= g0) & (p_idx < g1)
            best.scatter_reduce_(0, p_row[sel], sims[p_row[sel], p_idx[sel] - g0], reduce="amax")

        # Pass 2: count valid gallery items scoring above (or, pessimistic, at least equal to) the best positive.
        above = torch.zeros(b, dtype=torch.long, device=device)
        tied = torch.zeros(b, dtype=torch.bool, device=device)
        for g0 in range(0, m, gallery_chunk_size):
            g1 = min(m, g0 + gallery_chunk_size)
            sims = qc @ g[g0:g1].T  # [b, g1 - g0]
            valid = torch.ones_like(sims, dtype=torch.bool)
            sel = (p_idx >= g0) & (p_idx < g1)
            valid[p_row[sel], p_idx[sel] - g0] = False  # positives never count against the query
            if exclude_self:
                lo, hi = max(q0, g0), min(q1, g1)
                if lo < hi:
                    diag = torch.arange(lo, hi, device=device)
                    valid[diag - q0, diag - g0] = False
            eq = (sims == best[:, None]) & valid
            tied |= eq.any(dim=1)
            above += ((sims > best[:, None]) & valid).sum(dim=1)
            if ties == "pessimistic":
                above += eq.sum(dim=1)
        has_pos = n_pos > 0
        ranks[q0:q1] = torch.where(has_pos, above + 1, torch.full_like(above, -1)).cpu()
        n_tied += int((tied & has_pos).sum())
    n_valid = int((ranks > 0).sum())
    if ties == "optimistic" and n_valid and n_tied > 0.01 * n_valid:
        warnings.warn(
            f"{n_tied} of {n_valid} queries tie exactly with a non-positive item (collapsed or duplicate "
            "embeddings?); optimistic ranks may overstate recall, consider ties='pessimistic'",
            stacklevel=2,
        )
    return ranks


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Summarise 1-based ranks (entries <= 0 = query without positive, ignored).

    Args:
        ranks: Long tensor [N].
        ks: Cut-offs for recall.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., "mean_rank": ..., "n_queries": ...}``; R@K is
        the fraction in [0, 1] of queries whose best positive ranks within the top K; median_rank is the median of
        1-based ranks (mean of the middle two for an even count).
    """
    r = ranks[ranks > 0].double().cpu()
    if r.numel() == 0:
        raise ValueError("no query has a positive in the gallery; retrieval metrics are undefined")
    out = {f"R@{k}": float((r <= k).double().mean()) for k in ks}
    out["median_rank"] = float(np.median(r.numpy()))
    out["mean_rank"] = float(r.mean())
    out["n_queries"] = int(r.numel())
    return out


def retrieval_metrics(
    query: Tensor,
    gallery: Tensor,
    positives: Positives = None,
    *,
    query_ids: Any = None,
    gallery_ids: Any = None,
    exclude_self: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    gallery_chunk_size: int = 8192,
    normalize: bool = True,
    ties: str = "optimistic",
) -> dict[str, float]:
    """R@K, median and mean rank of query -> gallery retrieval (see :func:`retrieval_ranks` for the arguments).

    Args:
        query: Query embeddings [N, D].
        gallery: Gallery embeddings [M, D].
        positives: Positive specification (None = diagonal; indices [N]; list of lists; bool mask [N, M]).
        query_ids: Group ids [N] (alternative to ``positives``).
        gallery_ids: Group ids [M].
        exclude_self: Same set on both sides: the query is never its own candidate.
        ks: Recall cut-offs.
        chunk_size: Queries per block.
        gallery_chunk_size: Gallery items per block.
        normalize: Cosine (True) or dot-product (False) similarity.
        ties: "optimistic" or "pessimistic".

    Returns:
        See :func:`metrics_from_ranks`.
    """
    ranks = retrieval_ranks(
        query,
        gallery,
        positives,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
        exclude_self=exclude_self,
        chunk_size=chunk_size,
        gallery_chunk_size=gallery_chunk_size,
        normalize=normalize,
        ties=ties,
    )
    return metrics_from_ranks(ranks, ks)


def bidirectional_retrieval(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor | Sequence[int] | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    gallery_chunk_size: int = 8192,
    prefixes: tuple[str, str] = ("image_to_text", "text_to_image"),
) -> dict[str, float]:
    """Image -> text and text -> image retrieval with several captions per image.

    Args:
        image_features: [Ni, D].
        text_features: [Nt, D].
        text_to_image: Image index of every caption [Nt] (None = one caption per image, Nt == Ni, aligned).
            Image -> text ranks an image by its best caption; text -> image has one positive per caption.
        ks: Recall cut-offs.
        chunk_size: Queries per block.
        gallery_chunk_size: Gallery items per block.
        prefixes: Key prefixes for the two directions.

    Returns:
        ``{"image_to_text/R@1": ..., ..., "text_to_image/mean_rank": ...}``.
    """
    n_img = check_embeddings(image_features, "image_features").shape[0]
    n_txt = check_embeddings(text_features, "text_features").shape[0]
    if text_to_image is None:
        if n_img != n_txt:
            raise ValueError(f"text_to_image is needed when there are {n_img} images and {n_txt} texts")
        t2i = torch.arange(n_txt)
    else:
        t2i = as_tensor(text_to_image, "text_to_image", dtype=torch.long).cpu()
    kw: dict[str, Any] = {"ks": ks, "chunk_size": chunk_size, "gallery_chunk_size": gallery_chunk_size}
    i2t = retrieval_metrics(image_features, text_features, query_ids=torch.arange(n_img), gallery_ids=t2i, **kw)
    t2i_m = retrieval_metrics(text_features, image_features, t2i, **kw)
    out = {f"{prefixes[0]}/{k}": v for k, v in i2t.items()}
    out.update({f"{prefixes[1]}/{k}": v for k, v in t2i_m.items()})
    return out
