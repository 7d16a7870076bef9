"""Procedure-aware DTW loss, negative orders, chunked top-K and the silent-clip retrieval loss."""

from __future__ import annotations

import pytest
import torch

from vlp_core.losses import MultiPositiveClipLoss
from vlp_surgical.losses import (
    ProcedureDTWLoss,
    SilentClipBank,
    alignment_cost,
    chunked_topk,
    negative_orders,
    retrieval_positives,
)


def _procedure(b: int = 3, steps: int = 4, per: int = 3, d: int = 8, seed: int = 0):
    """Frames that walk through ``steps`` distinct states in order, and one text per state (same directions)."""
    g = torch.Generator().manual_seed(seed)
    texts = torch.randn(b, steps, d, generator=g, dtype=torch.float64)
    frames = texts.repeat_interleave(per, dim=1) + 0.1 * torch.randn(b, steps * per, d, generator=g,
                                                                     dtype=torch.float64)  # fmt: skip
    return frames, texts


def test_alignment_cost_axes() -> None:
    frames, texts = _procedure()
    c_text = alignment_cost(frames, texts, axis="text")
    torch.testing.assert_close(torch.exp(-c_text).sum(2), torch.ones(3, 12, dtype=torch.float64))
    c_frame = alignment_cost(frames, texts, axis="frame")
    torch.testing.assert_close(torch.exp(-c_frame).sum(1), torch.ones(3, 4, dtype=torch.float64))
    c_none = alignment_cost(frames, texts, axis="none")
    assert float(c_none.min()) >= -1e-12 and float(c_none.max()) <= 2 + 1e-12
    # Padded texts get no probability mass on the text axis.
    mask = torch.tensor([[True, True, True, False]] * 3)
    c = alignment_cost(frames, texts, axis="text", text_mask=mask)
    torch.testing.assert_close(torch.exp(-c[..., :3]).sum(2), torch.ones(3, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="axis"):
        alignment_cost(frames, texts, axis="rows")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["reverse", "shuffle", "local"])
def test_negative_orders_are_permutations_that_keep_padding(kind: str) -> None:
    n = torch.tensor([5, 2, 1, 4])
    perm = negative_orders(n, kind, torch.Generator().manual_seed(0))
    for row, k in zip(perm, n.tolist()):
        assert sorted(row[:k].tolist()) == list(range(k))
        assert row[k:].tolist() == list(range(k, 5))
        if k > 1:
            assert row[:k].tolist() != list(range(k))
    if kind == "reverse":
        assert perm[0].tolist() == [4, 3, 2, 1, 0]
    if kind == "local":
        assert perm[0].tolist() == [1, 0, 3, 2, 4]


@pytest.mark.parametrize("axis", ["text", "frame", "none"])
def test_aligned_order_beats_permuted_orders(axis: str) -> None:
    frames, texts = _procedure()
    loss = ProcedureDTWLoss(axis=axis, negatives=("reverse", "shuffle", "local"), margin=0.0)
    fm = torch.ones(3, 12, dtype=torch.bool)
    tm = torch.ones(3, 4, dtype=torch.bool)
    n = torch.tensor([4, 4, 4])
    pos = loss.dtw(frames, torch.tensor([12] * 3), texts, n)
    for kind in ("reverse", "shuffle", "local"):
        perm = negative_orders(n, kind, torch.Generator().manual_seed(1))
        neg = loss.dtw(frames, torch.tensor([12] * 3), torch.gather(texts, 1, perm[..., None].expand_as(texts)), n)
        assert bool((pos < neg).all()), (kind, pos, neg)
    out = loss(frames, fm, texts, tm)
    assert float(out["dtw_gap"]) > 0
    # Shuffling which video's texts go with which frames makes the true order no better than its permutations.
    wrong = loss(frames, fm, texts.roll(1, 0), tm)
    assert float(wrong["loss"]) > float(out["loss"])


def test_procedure_loss_gradcheck_and_padding() -> None:
    frames, texts = _procedure(b=2, steps=3, per=2, d=4)
    frames.requires_grad_(True)
    texts.requires_grad_(True)
    fm = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    tm = torch.tensor([[True] * 3, [True, True, False]])
    loss = ProcedureDTWLoss(negatives=("reverse",), margin=1.0, positive_weight=0.5)
    assert torch.autograd.gradcheck(lambda f, t: loss(f, fm, t, tm)["loss"], (frames, texts), eps=1e-6, atol=1e-6)
    # Padding does not influence the loss.
    f2 = frames.detach().clone()
    f2[1, 4:] = 100.0
    torch.testing.assert_close(loss(f2, fm, texts.detach(), tm)["loss"], loss(frames.detach(), fm, texts.detach(),
                                                                                tm)["loss"])  # fmt: skip


def test_samples_with_one_text_are_ignored() -> None:
    frames, texts = _procedure(b=2)
    tm = torch.tensor([[True, False, False, False]] * 2)
    out = ProcedureDTWLoss()(frames, torch.ones(2, 12, dtype=torch.bool), texts, tm)
    assert float(out["loss"]) == 0.0


def test_chunked_topk_is_exact() -> None:
    g = torch.Generator().manual_seed(2)
    q, bank = torch.randn(7, 5, generator=g), torch.randn(103, 5, generator=g)
    s, i = chunked_topk(q, bank, 4, chunk_size=10)
    ref_s, ref_i = (q @ bank.T).topk(4, dim=1)
    torch.testing.assert_close(s, ref_s)
    assert torch.equal(i, ref_i)
    assert chunked_topk(q, bank[:2], 4)[1].shape == (7, 2)


def test_silent_bank_refresh_schedule_and_retrieval_loss() -> None:
    g = torch.Generator().manual_seed(3)
    bank = SilentClipBank(8, k=2, refresh_every=10)
    assert bank.due(0)
    with pytest.raises(RuntimeError, match="empty"):
        bank.retrieve(torch.randn(2, 8))
    silent = torch.randn(20, 8, generator=g)
    bank.refresh(silent, step=0)
    assert not bank.due(5) and bank.due(10)
    clips = silent[:6] + 0.05 * torch.randn(6, 8, generator=g)  # narrated clips resemble some silent ones
    _, idx = bank.retrieve(clips)
    assert idx[:, 0].tolist() == list(range(6))
    loss = MultiPositiveClipLoss()
    aligned = retrieval_positives(clips.clone(), clips, bank, loss)["loss"]
    shuffled = retrieval_positives(clips.roll(1, 0).clone(), clips, bank, loss)["loss"]
    assert float(aligned.detach()) < float(shuffled.detach())
    t = clips.double().clone().requires_grad_(True)
    c = clips.double().clone().requires_grad_(True)
    bank.bank = bank.bank.double()
    loss64 = MultiPositiveClipLoss(learn_logit_scale=False).double()
    assert torch.autograd.gradcheck(lambda a, b: retrieval_positives(a, b, bank, loss64)["loss"], (t, c), eps=1e-6,
                                    atol=1e-5)  # fmt: skip
