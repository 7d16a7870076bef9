from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vlp_core.eval import bidirectional_retrieval, metrics_from_ranks, retrieval_metrics, retrieval_ranks


def _reference_ranks(q: torch.Tensor, g: torch.Tensor, pos_mask: torch.Tensor, exclude_self: bool = False):
    """Brute force: full similarity matrix, full argsort, position of the first positive."""
    sims = F.normalize(q, dim=-1) @ F.normalize(g, dim=-1).T
    ranks = []
    for i in range(q.shape[0]):
        order = torch.argsort(sims[i], descending=True, stable=True).tolist()
        if exclude_self:
            order = [j for j in order if j != i]
        positives = {j for j in pos_mask[i].nonzero().flatten().tolist() if not (exclude_self and j == i)}
        if not positives:
            ranks.append(-1)
            continue
        ranks.append(next(r for r, j in enumerate(order) if j in positives) + 1)
    return torch.tensor(ranks)


def _emb(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("chunk", "gchunk"), [(1, 1), (7, 13), (32, 5), (1000, 8192), (50, 50)])
def test_diagonal_matches_bruteforce(chunk: int, gchunk: int) -> None:
    q, g = _emb(50, seed=1), _emb(50, seed=2)
    g = g + 1.5 * q  # correlated so ranks are spread, not all huge
    ref = _reference_ranks(q, g, torch.eye(50, dtype=torch.bool))
    got = retrieval_ranks(q, g, chunk_size=chunk, gallery_chunk_size=gchunk)
    assert got.dtype == torch.float64 and torch.equal(got, ref.double())  # no ties: mean ranks are whole numbers
    for ties in ("pessimistic", "optimistic"):
        assert torch.equal(retrieval_ranks(q, g, chunk_size=chunk, gallery_chunk_size=gchunk, ties=ties), ref)
    m = retrieval_metrics(q, g, chunk_size=chunk, gallery_chunk_size=gchunk)
    r = ref.double()
    assert m["R@1"] == pytest.approx(float((r <= 1).double().mean()))
    assert m["R@5"] == pytest.approx(float((r <= 5).double().mean()))
    assert m["R@10"] == pytest.approx(float((r <= 10).double().mean()))
    assert m["mean_rank"] == pytest.approx(float(r.mean()))
    assert m["median_rank"] == pytest.approx(float(r.median()) if len(r) % 2 else float(r.sort().values[24:26].mean()))


@pytest.mark.parametrize(("chunk", "gchunk"), [(3, 7), (16, 11), (1024, 8192)])
def test_multi_positive_all_forms_match_bruteforce(chunk: int, gchunk: int) -> None:
    n_img, n_txt = 23, 61
    gen = torch.Generator().manual_seed(3)
    txt_to_img = torch.cat([torch.arange(n_img), torch.randint(n_img, (n_txt - n_img,), generator=gen)])
    img = _emb(n_img, seed=4)
    txt = _emb(n_txt, seed=5) + img[txt_to_img]
    mask = txt_to_img[None, :] == torch.arange(n_img)[:, None]  # [n_img, n_txt]
    ref = _reference_ranks(img, txt, mask)
    lists = [mask[i].nonzero().flatten().tolist() for i in range(n_img)]
    kw = {"chunk_size": chunk, "gallery_chunk_size": gchunk}
    by_ids = retrieval_ranks(img, txt, query_ids=torch.arange(n_img), gallery_ids=txt_to_img, **kw)
    by_lists = retrieval_ranks(img, txt, lists, **kw)
    by_mask = retrieval_ranks(img, txt, mask, **kw)
    str_ids = retrieval_ranks(
        img, txt, query_ids=[f"i{i}" for i in range(n_img)], gallery_ids=[f"i{int(i)}" for i in txt_to_img], **kw
    )
    for got in (by_ids, by_lists, by_mask, str_ids):
        assert torch.equal(got, ref)
    # Rank is that of the best positive: never worse than any single positive's rank.
    single = retrieval_ranks(img, txt, torch.tensor([lst[-1] for lst in lists]), **kw)
    assert bool((ref <= single).all()) and bool((ref < single).any())


@pytest.mark.parametrize(("chunk", "gchunk"), [(4, 9), (37, 37), (100, 6)])
def test_self_exclusion_matches_bruteforce(chunk: int, gchunk: int) -> None:
    n = 37
    groups = torch.arange(n) // 3  # e.g. 3 captions per image: text-to-text retrieval within the same set
    base = _emb(int(groups.max()) + 1, seed=6)
    x = _emb(n, seed=7) + base[groups]
    mask = groups[:, None] == groups[None, :]
    ref = _reference_ranks(x, x, mask, exclude_self=True)
    got = retrieval_ranks(
        x, x, query_ids=groups, gallery_ids=groups, exclude_self=True, chunk_size=chunk, gallery_chunk_size=gchunk
    )
    assert torch.equal(got, ref.double())
    # Without exclusion every query finds itself at rank 1: the option matters.
    trivial = retrieval_ranks(x, x, query_ids=groups, gallery_ids=groups, chunk_size=chunk, gallery_chunk_size=gchunk)
    assert bool((trivial == 1).all()) and not torch.equal(trivial, got)


def test_self_exclusion_singleton_groups_are_counted_not_dropped_silently() -> None:
    x = _emb(10, seed=8)
    groups = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 4, 5])  # groups 2 and 5 have one member -> no positive left
    with pytest.warns(UserWarning, match=r"2 of 10 queries have no positive .*2 of them had only themselves"):
        ranks = retrieval_ranks(x, x, query_ids=groups, gallery_ids=groups, exclude_self=True)
    assert ranks[4] == -1 and ranks[9] == -1 and int((ranks > 0).sum()) == 8
    with pytest.warns(UserWarning, match="n_queries_without_positive"):
        m = retrieval_metrics(x, x, query_ids=groups, gallery_ids=groups, exclude_self=True)
    assert m["n_queries"] == 8 and m["n_queries_without_positive"] == 2
    full = retrieval_metrics(x, x, query_ids=groups, gallery_ids=groups)  # every query has a positive: itself
    assert full["n_queries"] == 10 and full["n_queries_without_positive"] == 0


def test_matches_torchmetrics_hit_rate() -> None:
    from torchmetrics.functional.retrieval import retrieval_hit_rate

    img, txt = _emb(15, seed=9), _emb(40, seed=10)
    t2i = torch.arange(40) % 15
    txt = txt + img[t2i]
    mask = t2i[None, :] == torch.arange(15)[:, None]
    sims = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    m = retrieval_metrics(img, txt, query_ids=torch.arange(15), gallery_ids=t2i, chunk_size=4, gallery_chunk_size=9)
    for k in (1, 5, 10):
        expected = torch.stack([retrieval_hit_rate(sims[i], mask[i], top_k=k) for i in range(15)]).float().mean()
        assert m[f"R@{k}"] == pytest.approx(float(expected))


def test_never_materialises_full_matrix() -> None:
    n, m = 300, 400
    q, g = _emb(n, seed=11), _emb(m, seed=12)
    shapes: list[tuple[int, ...]] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                shapes.append(tuple(out.shape))
            return out

    with Record():
        retrieval_ranks(q, g, torch.arange(n), chunk_size=64, gallery_chunk_size=100)
    assert shapes, "nothing recorded"
    biggest = max(int(torch.tensor(s).prod()) if s else 1 for s in shapes)
    assert biggest <= max(64 * 100, m * 16), f"largest intermediate has {biggest} elements"


def test_bidirectional_keys_and_values() -> None:
    img = _emb(12, seed=13)
    t2i = torch.arange(30) % 12
    txt = _emb(30, seed=14) + 2 * img[t2i]
    out = bidirectional_retrieval(img, txt, t2i, chunk_size=5)
    assert out["image_to_text/n_queries"] == 12 and out["text_to_image/n_queries"] == 30
    assert out["text_to_image/R@1"] == pytest.approx(retrieval_metrics(txt, img, t2i)["R@1"])


def test_ties_are_deterministic_and_mean_by_default() -> None:
    x = torch.ones(6, 4)  # collapsed embeddings: every item ties with every other
    mean = retrieval_ranks(x, x)  # each query: 0 items above, 5 tied -> 1 + 5 / 2
    assert bool((mean == 3.5).all())
    m = retrieval_metrics(x, x)
    assert m["R@1"] == pytest.approx(1 / 6) and m["R@5"] == pytest.approx(5 / 6) and m["mean_rank"] == 3.5
    with pytest.warns(UserWarning, match="tie exactly"):
        optimistic = retrieval_ranks(x, x, ties="optimistic")  # only on request, and with a warning
    assert bool((optimistic == 1).all()) and optimistic.dtype == torch.long
    pessimistic = retrieval_ranks(x, x, ties="pessimistic")
    assert bool((pessimistic == 6).all())
    assert retrieval_metrics(x, x, ties="pessimistic")["R@5"] == 0.0
    with pytest.raises(ValueError, match="ties must be one of"):
        retrieval_ranks(x, x, ties="random")


def test_mean_ties_equal_the_average_over_random_tie_orders() -> None:
    """Reference: brute-force ranks with ties broken by a random key, averaged over many draws."""
    gen = torch.Generator().manual_seed(3)
    pool = torch.randn(4, 8, generator=gen)  # few distinct vectors: exact ties, including among positives
    q = pool[torch.randint(0, 4, (12,), generator=gen)]
    g = pool[torch.randint(0, 4, (20,), generator=gen)]
    pos = [[j for j in range(20) if j % 12 == i or j == (i * 7) % 20] for i in range(12)]
    mask = torch.zeros(12, 20, dtype=torch.bool)
    for i, p in enumerate(pos):
        mask[i, p] = True
    sims = (F.normalize(q, dim=-1) @ F.normalize(g, dim=-1).T).double().round(decimals=5)
    draws, ks = 3000, (1, 3, 5)
    keys = torch.rand(draws, 1, 20, generator=gen).expand(draws, 12, 20)
    # Sort by (score desc, random key asc): a score step of 1 dominates any key in [0, 1).
    order_score = -sims * 1e6 + keys  # distinct pool vectors differ by far more than 1e-6 in cosine
    ranks = torch.empty(draws, 12)
    for i in range(12):
        order = torch.argsort(order_score[:, i], dim=1)
        ranks[:, i] = mask[i][order].float().argmax(dim=1) + 1  # position of the first positive
    m = retrieval_metrics(q, g, pos, ks=ks, chunk_size=5, gallery_chunk_size=7)
    assert m["mean_rank"] == pytest.approx(float(ranks.mean()), abs=0.05)
    for k in ks:
        assert m[f"R@{k}"] == pytest.approx(float((ranks <= k).float().mean()), abs=0.015)
    assert float(retrieval_ranks(q, g, pos).max()) > 2  # the case really has ties that matter


def test_nan_embeddings_raise() -> None:
    q = _emb(5)
    q[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(q, _emb(5, seed=1))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(_emb(5, seed=1), q)


def test_bad_arguments_raise() -> None:
    q, g = _emb(4), _emb(6, seed=1)
    with pytest.raises(ValueError, match="N=4 != M=6"):
        retrieval_ranks(q, g)
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_ranks(q, g, torch.arange(4), exclude_self=True)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        retrieval_ranks(q, g, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(ValueError, match="no query has a positive"):
        metrics_from_ranks(torch.tensor([-1, -1]))


def test_retrieval_takes_a_similarity() -> None:
    """A non-inner-product similarity ranks exactly like brute force over its full score matrix."""
    from vlp_core.similarity import Similarity

    class NegL1(Similarity):
        def forward(self, a, b):
            return -torch.cdist(a, b, p=1)

    g = torch.Generator().manual_seed(3)
    q, gal = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    ranks = retrieval_ranks(q, gal, similarity=NegL1(), chunk_size=4, gallery_chunk_size=5)
    scores = -torch.cdist(q, gal, p=1)
    brute = 1 + (scores > scores.diagonal()[:, None]).sum(1)
    assert ranks.tolist() == brute.double().tolist()
