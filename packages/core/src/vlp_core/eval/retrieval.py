"""Chunked, multi-positive retrieval metrics (R@K, median and mean rank) with bounded memory.

For each query the *rank* is ``1 + #{valid gallery items that score strictly higher than the query's best
positive}`` (plus a share of the ties, below), where the best positive is the positive with the highest similarity
(a query with several captions is ranked by its best one) and valid items are all non-positive gallery items, minus
the query itself when ``exclude_self=True``.

Queries without a positive (for example a text whose only positive was itself, removed by ``exclude_self``) have no
rank: they are excluded from R@K and the rank statistics, and *counted* in ``n_queries_without_positive`` (with a
warning), never dropped silently.

Memory: similarities are computed block by block (``chunk_size`` queries x ``gallery_chunk_size`` gallery items),
so peak extra memory is O(chunk_size x gallery_chunk_size + N + M + number of positive pairs), never N x M
(unlike open_clip's ``get_clip_metrics`` and torchmetrics' retrieval metrics, which store every score).

Ties (deterministic), where ``t`` valid items score *exactly* the same as the best positive and ``a`` score higher:

- ``ties="mean"`` (default): the expected rank when ties are broken at random, ``1 + a + t / (p + 1)`` where ``p``
  positives share the best score (``1 + a + t / 2`` with one), and R@K is the expected recall under that random
  order. Collapsed embeddings (all scores equal) score like chance, not like a perfect model.
- ``ties="pessimistic"``: rank ``1 + a + t`` (every tie counts against the query).
- ``ties="optimistic"``: rank ``1 + a`` (ties never count), only on request: it rewards collapsed embeddings, so a
  warning is issued when more than 1 % of queries tie with a non-positive item.

The positive scores are taken from the same block matmul as the scores they are compared with, so an exact tie is
decided identically whatever the chunk sizes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vlp_core.eval._checks import as_tensor, check_embeddings
from vlp_core.similarity import Similarity, resolve_similarity

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


_TIES = ("mean", "pessimistic", "optimistic")


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
    ties: str = "mean",
    similarity: Similarity | None = None,
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
        ties: "mean" (default: 1 + above + tied / 2), "pessimistic" (1 + above + tied) or "optimistic"
            (1 + above); see the module docstring.
        similarity: any :class:`~vlp_core.similarity.Similarity` (overrides ``normalize``); default cosine.

    Returns:
        Ranks [N] (1 = best positive is the top item): float64 for ``ties="mean"`` (half ranks where ties
        split), long otherwise; -1 for queries without any positive (ignored by :func:`metrics_from_ranks` and
        counted there as ``n_queries_without_positive``).
    """
    counts = _rank_counts(
        query, gallery, positives, query_ids=query_ids, gallery_ids=gallery_ids, exclude_self=exclude_self,
        chunk_size=chunk_size, gallery_chunk_size=gallery_chunk_size, normalize=normalize, ties=ties,
        similarity=similarity,
    )  # fmt: skip
    for message in counts[3]:
        warnings.warn(message, stacklevel=2)
    return _ranks(*counts[:3], ties)


def _ranks(above: Tensor, tied: Tensor, best_pos: Tensor, ties: str) -> Tensor:
    """Ranks from the counts of valid items above / tied with the best positive (-1 where ``above < 0``)."""
    if ties == "mean":
        # Random order of the t tied negatives and p tied positives: E[negatives before the first positive] = t/(p+1).
        ranks = 1.0 + above.double() + tied.double() / (best_pos.double() + 1)
    elif ties == "pessimistic":
        ranks = 1 + above + tied
    else:
        ranks = 1 + above
    return torch.where(above >= 0, ranks, torch.full_like(ranks, -1))


@torch.no_grad()
def _rank_counts(
    query: Tensor,
    gallery: Tensor,
    positives: Positives,
    *,
    query_ids: Any,
    gallery_ids: Any,
    exclude_self: bool,
    chunk_size: int,
    gallery_chunk_size: int,
    normalize: bool,
    ties: str,
    similarity: Similarity | None = None,
) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """Per query: valid gallery items scoring strictly above the best positive, and exactly tied with it.

    Returns:
        ``above`` [N] long (-1 for a query without positive), ``tied`` [N] long (non-positives tied with the best
        positive), ``best_pos`` [N] long (positives sharing the best score, >= 1 where there is one) and warnings
        for the public caller to issue.
    """
    messages: list[str] = []
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {', '.join(map(repr, _TIES))}, got {ties!r}")
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
    sim = resolve_similarity(similarity, normalize)
    q, g = sim.prepare(q), sim.prepare(g.to(q.dtype))
    ptr, idx = _positives_csr(positives, n, m, query_ids, gallery_ids)
    had_pos = ptr.diff() > 0
    if exclude_self:
        ptr, idx = _drop_self(ptr, idx)
    no_pos = ptr.diff() == 0
    if bool(no_pos.any()):
        self_only = int((no_pos & had_pos).sum())
        why = f" ({self_only} of them had only themselves as positive, removed by exclude_self)" if self_only else ""
        messages.append(
            f"{int(no_pos.sum())} of {n} queries have no positive in the gallery{why}; they are left out of R@K and "
            "the rank statistics and counted in n_queries_without_positive"
        )

    device = q.device
    above_all = torch.full((n,), -1, dtype=torch.long)
    tied_all = torch.zeros(n, dtype=torch.long)
    best_pos_all = torch.zeros(n, dtype=torch.long)
    for q0 in range(0, n, chunk_size):
        q1 = min(n, q0 + chunk_size)
        qc = q[q0:q1]
        b = q1 - q0
        p_idx = idx[ptr[q0] : ptr[q1]].to(device)
        p_row = torch.repeat_interleave(torch.arange(b), ptr[q0 : q1 + 1].diff()).to(device)
        n_pos = ptr[q0 : q1 + 1].diff().to(device)

        # Pass 1: positive scores, from the same block matmul as pass 2 (bitwise-consistent tie handling).
        pos_scores = torch.empty(p_idx.numel(), dtype=q.dtype, device=device)
        for gc in torch.unique(p_idx // gallery_chunk_size).tolist():
            g0, g1 = gc * gallery_chunk_size, min(m, (gc + 1) * gallery_chunk_size)
            sims = sim.pairwise(qc, g[g0:g1])
            sel = (p_idx >= g0) & (p_idx < g1)
            pos_scores[sel] = sims[p_row[sel], p_idx[sel] - g0]
        best = torch.full((b,), float("-inf"), dtype=q.dtype, device=device)
        best.scatter_reduce_(0, p_row, pos_scores, reduce="amax")
        best_pos = torch.bincount(p_row[pos_scores == best[p_row]], minlength=b)

        # Pass 2: count valid gallery items scoring above, and exactly equal to, the best positive.
        above = torch.zeros(b, dtype=torch.long, device=device)
        tied = torch.zeros(b, dtype=torch.long, device=device)
        for g0 in range(0, m, gallery_chunk_size):
            g1 = min(m, g0 + gallery_chunk_size)
            sims = sim.pairwise(qc, g[g0:g1])  # [b, g1 - g0]
            valid = torch.ones_like(sims, dtype=torch.bool)
            sel = (p_idx >= g0) & (p_idx < g1)
            valid[p_row[sel], p_idx[sel] - g0] = False  # positives never count against the query
            if exclude_self:
                lo, hi = max(q0, g0), min(q1, g1)
                if lo < hi:
                    diag = torch.arange(lo, hi, device=device)
                    valid[diag - q0, diag - g0] = False
            tied += ((sims == best[:, None]) & valid).sum(dim=1)
            above += ((sims > best[:, None]) & valid).sum(dim=1)
        has_pos = n_pos > 0
        above_all[q0:q1] = torch.where(has_pos, above, torch.full_like(above, -1)).cpu()
        tied_all[q0:q1] = torch.where(has_pos, tied, torch.zeros_like(tied)).cpu()
        best_pos_all[q0:q1] = best_pos.cpu()
    n_valid = int((above_all >= 0).sum())
    n_tied = int((tied_all > 0).sum())
    if ties == "optimistic" and n_valid and n_tied > 0.01 * n_valid:
        messages.append(
            f"{n_tied} of {n_valid} queries tie exactly with a non-positive item (collapsed or duplicate "
            "embeddings?); optimistic ranks overstate recall, use ties='mean' (default) or 'pessimistic'"
        )
    return above_all, tied_all, best_pos_all, messages


def _expected_recall(above: Tensor, tied: Tensor, best_pos: Tensor, k: int) -> Tensor:
    """P(rank <= k) when the ``t`` tied negatives and ``p`` tied positives are ordered at random.

    With ``X`` the number of tied negatives placed before the first tied positive, rank = 1 + a + X and
    ``P(X >= j) = prod_{i<j} (t - i) / (t + p - i)``, so R@k = 1 - P(X >= k - a).
    """
    a, t, p = above.double(), tied.double(), best_pos.double()
    j = (k - a).clamp(min=0)
    j_in = torch.minimum(j, t)  # lgamma arguments stay positive; j > t is handled below
    log_tail = (
        torch.lgamma(t + 1) - torch.lgamma(t - j_in + 1) - torch.lgamma(t + p + 1) + torch.lgamma(t + p - j_in + 1)
    )
    recall = 1 - torch.exp(log_tail)
    return torch.where(j <= 0, torch.zeros_like(recall), torch.where(j > t, torch.ones_like(recall), recall))


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Summarise 1-based ranks (entries <= 0 = query without positive: counted, not scored).

    Args:
        ranks: Ranks [N] (long, or float64 mean ranks from ``ties="mean"``; R@K then counts ``rank <= K``, while
            :func:`retrieval_metrics` reports the exact expected recall over random tie orders).
        ks: Cut-offs for recall.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., "mean_rank": ..., "n_queries": ...,
        "n_queries_without_positive": ...}``; R@K is the fraction in [0, 1] of scored queries whose best positive
        ranks within the top K; median_rank is the median of the ranks (mean of the middle two for an even
        count); ``n_queries`` counts the scored queries and ``n_queries_without_positive`` those left out.
    """
    return _summarise(ranks, ks)


def _summarise(ranks: Tensor, ks: Sequence[int], recall: Any = None) -> dict[str, float]:
    ranks = ranks.cpu()
    keep = ranks > 0
    r = ranks[keep].double()
    if r.numel() == 0:
        raise ValueError(
            f"no query has a positive in the gallery ({ranks.numel()} queries); retrieval metrics are undefined"
        )
    if recall is None:
        out = {f"R@{k}": float((r <= k).double().mean()) for k in ks}
    else:
        out = {f"R@{k}": float(recall(k)[keep].mean()) for k in ks}
    out["median_rank"] = float(np.median(r.numpy()))
    out["mean_rank"] = float(r.mean())
    out["n_queries"] = int(r.numel())
    out["n_queries_without_positive"] = int((~keep).sum())
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
    ties: str = "mean",
    similarity: Similarity | None = None,
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
        ties: "mean" (default), "pessimistic" or "optimistic" (see the module docstring).
        similarity: any :class:`~vlp_core.similarity.Similarity` (overrides ``normalize``).

    Returns:
        See :func:`metrics_from_ranks` (with ``ties="mean"``, R@K is the expected recall over random tie orders).
    """
    above, tied, best_pos, messages = _rank_counts(
        query, gallery, positives, query_ids=query_ids, gallery_ids=gallery_ids, exclude_self=exclude_self,
        chunk_size=chunk_size, gallery_chunk_size=gallery_chunk_size, normalize=normalize, ties=ties,
        similarity=similarity,
    )  # fmt: skip
    for message in messages:
        warnings.warn(message, stacklevel=2)
    recall = (lambda k: _expected_recall(above, tied, best_pos, k)) if ties == "mean" else None
    return _summarise(_ranks(above, tied, best_pos, ties), ks, recall)


def bidirectional_retrieval(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor | Sequence[int] | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    gallery_chunk_size: int = 8192,
    prefixes: tuple[str, str] = ("image_to_text", "text_to_image"),
    ties: str = "mean",
    similarity: Similarity | None = None,
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
        ties: Tie handling, see :func:`retrieval_ranks`.
        similarity: pairwise similarity (default cosine).

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
    kw: dict[str, Any] = {"ks": ks, "chunk_size": chunk_size, "gallery_chunk_size": gallery_chunk_size, "ties": ties,
                          "similarity": similarity}  # fmt: skip
    i2t = retrieval_metrics(image_features, text_features, query_ids=torch.arange(n_img), gallery_ids=t2i, **kw)
    t2i_m = retrieval_metrics(text_features, image_features, t2i, **kw)
    out = {f"{prefixes[0]}/{k}": v for k, v in i2t.items()}
    out.update({f"{prefixes[1]}/{k}": v for k, v in t2i_m.items()})
    return out
