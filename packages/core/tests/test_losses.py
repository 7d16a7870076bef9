"""Losses: parity with open_clip, gradcheck, chunked == unchunked, emulated multi-rank == full batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlp_core.losses import (
    ClipLoss,
    MultiPositiveClipLoss,
    SigLipLoss,
    chunked_cross_entropy,
    chunked_sigmoid_loss,
    chunked_symmetric_cross_entropy,
)

open_clip_loss = pytest.importorskip("open_clip.loss", reason="open-clip-torch is a test-only dependency (dev group)")


def _features(n: int = 24, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return a.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("chunk", [None, 5])
def test_clip_loss_matches_open_clip(chunk: int | None) -> None:
    a, b = _features()
    # open_clip takes unit-norm features as given; compare the same function (no re-normalisation).
    ours = ClipLoss(chunk_size=chunk, normalize_inputs=False).double()
    res = ours(a, b)
    ga, gb, gs = torch.autograd.grad(res["loss"], (a, b, ours.logit_scale))

    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    theta = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    ref = open_clip_loss.ClipLoss()(a2, b2, theta.exp())
    ra, rb, rs = torch.autograd.grad(ref, (a2, b2, theta))

    torch.testing.assert_close(res["loss"], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ga, ra, rtol=0, atol=1e-6)
    torch.testing.assert_close(gb, rb, rtol=0, atol=1e-6)
    torch.testing.assert_close(gs.squeeze(), rs, rtol=0, atol=1e-6)
    torch.testing.assert_close(res["logit_scale"], torch.tensor(1 / 0.07, dtype=torch.float64))


@pytest.mark.parametrize("chunk", [None, 7])
def test_siglip_loss_matches_open_clip(chunk: int | None) -> None:
    a, b = _features(n=19)
    ours = SigLipLoss(chunk_size=chunk, normalize_inputs=False).double()
    res = ours(a, b)
    ga, gb, gs, gbias = torch.autograd.grad(res["loss"], (a, b, ours.logit_scale, ours.logit_bias))

    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    theta = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    ref = open_clip_loss.SigLipLoss()(a2, b2, theta.exp(), bias)
    ra, rb, rs, rbias = torch.autograd.grad(ref, (a2, b2, theta, bias))

    torch.testing.assert_close(res["loss"], ref, rtol=0, atol=1e-6)
    for ours_g, ref_g in ((ga, ra), (gb, rb), (gs.squeeze(), rs), (gbias.squeeze(), rbias)):
        torch.testing.assert_close(ours_g, ref_g, rtol=0, atol=1e-6)


def test_siglip_init_and_clip_init() -> None:
    s = SigLipLoss()
    assert math.isclose(s.logit_scale.exp().item(), 10.0, rel_tol=1e-6) and s.logit_bias.item() == -10.0
    c = ClipLoss()
    assert c.logit_scale.shape == (1,)  # 1-D, so FSDP can shard it
    assert math.isclose(c.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)


def test_clamp_caps_scale_at_100_and_floor_at_1() -> None:
    loss = ClipLoss()
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)
    loss.clamp_parameters()
    assert math.isclose(loss.logit_scale.exp().item(), 100.0, rel_tol=1e-5)
    with torch.no_grad():
        loss.logit_scale.fill_(-3.0)
    loss.clamp_parameters()
    assert loss.logit_scale.item() == 0.0


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
def test_chunked_kernels_equal_dense(chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(13, 6, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 13, (10,), generator=g)
    dense = F.cross_entropy(s * q @ k.T, t)
    ours = chunked_cross_entropy(q, k, s, t, chunk)
    torch.testing.assert_close(ours, dense)
    for x, y in zip(torch.autograd.grad(ours, (q, k, s)), torch.autograd.grad(dense, (q, k, s))):
        torch.testing.assert_close(x, y)
    k_sq = k[:10]
    dense_sym = 0.5 * (
        F.cross_entropy(s * q @ k_sq.T, torch.arange(10)) + F.cross_entropy(s * k_sq @ q.T, torch.arange(10))
    )
    ours = chunked_symmetric_cross_entropy(q, k_sq, s, chunk)
    torch.testing.assert_close(ours, dense_sym)
    for x, y in zip(torch.autograd.grad(ours, (q, k, s)), torch.autograd.grad(dense_sym, (q, k, s))):
        torch.testing.assert_close(x, y)
    labels = -torch.ones(10, 13, dtype=torch.float64)
    labels[torch.arange(10), torch.arange(10) + 2] = 1
    dense = -F.logsigmoid(labels * (s * q @ k.T + bias)).sum() / 10
    ours = chunked_sigmoid_loss(q, k, s, bias, 2, chunk)
    torch.testing.assert_close(ours, dense)
    for x, y in zip(torch.autograd.grad(ours, (q, k, s, bias)), torch.autograd.grad(dense, (q, k, s, bias))):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClipLoss(),
        lambda: ClipLoss(chunk_size=3),
        lambda: ClipLoss(chunk_size=3, local_loss=False),
        lambda: SigLipLoss(),
        lambda: SigLipLoss(chunk_size=3),
    ],
    ids=["clip", "clip-chunked", "clip-chunked-global", "siglip", "siglip-chunked"],
)
def test_gradcheck_pair_losses(make) -> None:
    loss = make().double()
    a, b = _features(n=7, d=5, seed=3)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b)["loss"], (a, b), eps=1e-6, atol=1e-5)
    theta = loss.logit_scale.detach().clone().requires_grad_()

    def with_scale(th):
        loss.logit_scale.data = th.data
        return loss(a.detach(), b.detach())["loss"]

    # Finite differences on the temperature: compare autograd with a central difference.
    lp, lm = with_scale(theta + 1e-6), with_scale(theta - 1e-6)
    loss.logit_scale.data = theta.data.clone()
    g = torch.autograd.grad(loss(a.detach(), b.detach())["loss"], loss.logit_scale)[0]
    torch.testing.assert_close(g, (lp - lm).reshape(1) / 2e-6, rtol=1e-4, atol=1e-6)


def test_gradcheck_multi_positive() -> None:
    loss = MultiPositiveClipLoss().double()
    a, _ = _features(n=4, d=5, seed=4)
    g = torch.Generator().manual_seed(5)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 2, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, pos)["loss"], (a, b), eps=1e-6, atol=1e-5)


def test_multi_positive_reduces_to_clip_and_matches_brute_force() -> None:
    a, b = _features(n=6, d=4, seed=7)
    mp, clip = MultiPositiveClipLoss().double(), ClipLoss().double()
    torch.testing.assert_close(mp(a, b, torch.eye(6, dtype=torch.float64))["loss"], clip(a, b)["loss"])
    # Two captions per image, with weights 3:1; brute force from the definition.
    caps = F.normalize(torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8)), dim=-1)
    pos = torch.zeros(6, 12, dtype=torch.float64)
    for i in range(6):
        pos[i, 2 * i], pos[i, 2 * i + 1] = 3.0, 1.0
    s = 1 / 0.07
    logp_row = F.log_softmax(s * a @ caps.T, dim=1)
    row = -sum((pos[i] / pos[i].sum() * logp_row[i]).sum() for i in range(6)) / 6
    logp_col = F.log_softmax(s * caps @ a.T, dim=1)
    col = -sum((pos[:, j] / pos[:, j].sum() * logp_col[j]).sum() for j in range(12)) / 12
    torch.testing.assert_close(mp(a, caps, pos)["loss"], 0.5 * (row + col))


def _emulate_ranks(make, a: torch.Tensor, b: torch.Tensor, world: int, extra=None):
    """Run the loss as `world` ranks in one process: an autograd-aware fake gather (cat of every rank's tensor)."""
    n = a.shape[0] // world
    a_parts = [a[r * n : (r + 1) * n] for r in range(world)]
    b_parts = [b[r * n : (r + 1) * n] for r in range(world)]
    losses = []
    for r in range(world):
        loss = make().double()
        loss.rank, loss.world_size = r, world
        parts = {id(a_parts[r]): a_parts, id(b_parts[r]): b_parts}
        loss.gather_fn = lambda x, parts=parts: parts[id(x)] if id(x) in parts else [x] * world
        args = (a_parts[r], b_parts[r]) if extra is None else (a_parts[r], b_parts[r], extra[r])
        losses.append(loss(*args)["loss"])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("cls", [ClipLoss, SigLipLoss])
@pytest.mark.parametrize("local", [True, False])
def test_emulated_ranks_equal_full_batch(cls, local: bool) -> None:
    a, b = _features(n=12, d=6, seed=11)
    # Inputs are unit-norm already; without re-normalisation the fake gather sees the very tensors it was given.
    kwargs = {"local_loss": local, "normalize_inputs": False} if cls is ClipLoss else {"normalize_inputs": False}
    full = cls(**kwargs).double()(a, b)["loss"]
    ga, gb = torch.autograd.grad(full, (a, b))
    emulated = _emulate_ranks(lambda: cls(**kwargs), a, b, world=3)
    ea, eb = torch.autograd.grad(emulated, (a, b))
    torch.testing.assert_close(emulated, full)
    torch.testing.assert_close(ea, ga)
    torch.testing.assert_close(eb, gb)


def test_bad_inputs_raise_clear_errors() -> None:
    loss = ClipLoss()
    with pytest.raises(ValueError, match="NaN"):
        loss(torch.full((4, 8), float("nan")), torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        loss(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="one b per a"):
        loss(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least one positive"):
        MultiPositiveClipLoss()(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))


def test_aligned_pairs_score_lower_than_shuffled() -> None:
    a, _ = _features(n=16, d=32, seed=2)
    b = F.normalize(a.detach() + 0.1 * torch.randn_like(a), dim=-1)
    for loss in (ClipLoss().double(), SigLipLoss().double()):
        aligned = loss(a.detach(), b)["loss"]
        shuffled = loss(a.detach(), b[torch.randperm(16, generator=torch.Generator().manual_seed(0))])["loss"]
        assert aligned < shuffled


def test_multi_positive_emulated_ranks_equal_block_diagonal_full_batch() -> None:
    """Two captions per anchor (weights 2:1), 2 ranks: the mean rank loss equals the global block-diagonal loss."""
    world, n = 2, 3
    a, _ = _features(n=world * n, d=5, seed=21)
    g = torch.Generator().manual_seed(22)
    b = F.normalize(torch.randn(world * 2 * n, 5, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    local_pos = torch.zeros(n, 2 * n, dtype=torch.float64)
    for i in range(n):
        local_pos[i, 2 * i], local_pos[i, 2 * i + 1] = 2.0, 1.0
    full_pos = torch.block_diag(*[local_pos] * world)
    make = lambda: MultiPositiveClipLoss(normalize_inputs=False)  # noqa: E731
    full = make().double()(a, b, full_pos)["loss"]
    fa, fb = torch.autograd.grad(full, (a, b))

    a_parts = [a[r * n : (r + 1) * n] for r in range(world)]
    b_parts = [b[r * 2 * n : (r + 1) * 2 * n] for r in range(world)]
    losses = []
    for r in range(world):
        loss = make().double()
        loss.rank, loss.world_size = r, world
        parts = {id(a_parts[r]): a_parts, id(b_parts[r]): b_parts}
        loss.gather_fn = lambda x, parts=parts: parts.get(id(x), [x] * world)  # counts are equal on both ranks
        losses.append(loss(a_parts[r], b_parts[r], local_pos)["loss"])
    emulated = torch.stack(losses).mean()
    ea, eb = torch.autograd.grad(emulated, (a, b))
    torch.testing.assert_close(emulated, full)
    torch.testing.assert_close(ea, fa)
    torch.testing.assert_close(eb, fb)


def _mp_import():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("vlp_mp_ragged", Path(__file__).with_name("mp_ragged.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multi_positive_owner_index_equals_dense_matrix() -> None:
    mp = _mp_import()
    a, b = mp.data()
    dense = torch.zeros(5, 9, dtype=torch.float64)
    dense[mp.OWNER, torch.arange(9)] = mp.WEIGHTS
    loss = MultiPositiveClipLoss().double()
    torch.testing.assert_close(loss(a, b, mp.OWNER, weights=mp.WEIGHTS)["loss"], loss(a, b, dense)["loss"])


def test_multi_positive_ids_make_identical_texts_positives() -> None:
    """With text ids, a candidate whose text equals one of anchor i's own texts is a positive of i (brute force)."""
    mp = _mp_import()
    a, b = mp.data()
    dense = torch.zeros(5, 9, dtype=torch.float64)
    for i in range(5):
        own = {int(t) for t in mp.IDS[i == mp.OWNER]}
        for j in range(9):
            if int(mp.IDS[j]) in own:
                dense[i, j] = mp.WEIGHTS[j]
    loss = MultiPositiveClipLoss().double()
    with_ids = loss(a, b, mp.OWNER, ids=mp.IDS, weights=mp.WEIGHTS)["loss"]
    torch.testing.assert_close(with_ids, loss(a, b, dense)["loss"])
    assert not torch.allclose(with_ids, loss(a, b, mp.OWNER, weights=mp.WEIGHTS)["loss"])  # the ids matter


@pytest.mark.parametrize("use_ids", [False, True])
def test_multi_positive_ragged_emulated_ranks_equal_global(use_ids: bool) -> None:
    """Ranks with different B and M: rank-averaged loss and gradients equal the single-process loss."""
    mp = _mp_import()
    a, b = mp.data()
    a.requires_grad_(True)
    b.requires_grad_(True)
    kw = {"ids": mp.IDS} if use_ids else {}
    full = MultiPositiveClipLoss().double()(a, b, mp.OWNER, weights=mp.WEIGHTS, **kw)["loss"]
    g_full = torch.autograd.grad(full, (a, b))
    total = torch.zeros((), dtype=torch.float64)
    grads = [torch.zeros_like(a), torch.zeros_like(b)]
    slices = [mp.rank_slices(r) for r in range(2)]
    owner_global = [mp.OWNER[sb] for _, sb in slices]
    for rank in range(2):
        sa, sb = slices[rank]
        # Whole-batch parts of every gathered quantity, in the order the loss gathers them (features after the
        # similarity's per-row preparation, i.e. normalised).
        order = [[F.normalize(a[s], dim=-1) for s, _ in slices], [F.normalize(b[s], dim=-1) for _, s in slices]]
        if use_ids:
            order += [[mp.IDS[s] for _, s in slices], [mp.WEIGHTS[s] for _, s in slices], owner_global]
        order += [[torch.tensor([float(x)], dtype=torch.float64) for x in mp.A_SPLIT]]
        order += [[torch.tensor([float(x)], dtype=torch.float64) for x in mp.B_SPLIT]]
        calls = iter(order)

        def gather(x, rank=rank, calls=calls):
            parts = next(calls)
            return [x if r == rank else parts[r] for r in range(2)]

        loss = MultiPositiveClipLoss().double()
        loss.rank, loss.world_size, loss.gather_fn = rank, 2, gather
        local_kw = {"ids": mp.IDS[sb]} if use_ids else {}
        value = loss(a[sa], b[sb], mp.local_owner(rank), weights=mp.WEIGHTS[sb], **local_kw)["loss"]
        total = total + value.detach() / 2
        for acc, g in zip(grads, torch.autograd.grad(value, (a, b))):
            acc += g / 2
    torch.testing.assert_close(total, full.detach(), rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, g_full):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_similarity_is_pluggable_in_clip_loss() -> None:
    """A non-inner-product similarity runs through ClipLoss unchanged (here negative squared distance)."""
    from vlp_core.similarity import Similarity

    class NegSqDist(Similarity):
        def forward(self, a, b):
            return -torch.cdist(a, b).square()

    a, b = _features(n=8, d=4, seed=3)
    ours = ClipLoss(similarity=NegSqDist()).double()(a, b)["loss"]
    s = 1 / 0.07
    logits = -s * torch.cdist(a, b).square()
    t = torch.arange(8)
    ref = 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="inner-product"):
        ClipLoss(similarity=NegSqDist(), chunk_size=4)
