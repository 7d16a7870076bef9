"""Caption and GLoRIA local-alignment losses (moved from vlp-ecg): brute force, gradcheck, aligned < shuffled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp_core.losses import CaptionLoss, LocalAlignmentLoss, caption_loss, local_alignment_scores


def _reference_scores(beats, bmask, sents, smask, g1=4.0, g2=5.0, tau=0.1):
    """Brute-force GLoRIA local scores with explicit loops and materialised context vectors."""
    b = beats.shape[0]
    out = torch.zeros(b, b, dtype=beats.dtype)
    for i in range(b):
        s = F.normalize(sents[i][smask[i]], dim=-1)
        for j in range(b):
            q = F.normalize(beats[j][bmask[j]], dim=-1)
            a = (s @ q.T / tau).softmax(0)  # over sentences
            alpha = (g1 * a).softmax(1)  # over beats
            ctx = alpha @ q
            r = F.cosine_similarity(s, ctx, dim=-1)
            out[i, j] = torch.logsumexp(g2 * r, 0)
    return out


def _local_inputs(b=4, nb=5, s=3, d=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    beats = torch.randn(b, nb, d, generator=g, dtype=dtype)
    sents = torch.randn(b, s, d, generator=g, dtype=dtype)
    bmask = torch.ones(b, nb, dtype=torch.bool)
    smask = torch.ones(b, s, dtype=torch.bool)
    bmask[1, 3:] = False
    smask[2, 1:] = False
    return beats, bmask, sents, smask


def test_local_scores_match_brute_force() -> None:
    beats, bmask, sents, smask = _local_inputs()
    fast = local_alignment_scores(beats, bmask, sents, smask)
    torch.testing.assert_close(fast, _reference_scores(beats, bmask, sents, smask), rtol=1e-9, atol=1e-9)


def test_local_loss_gradcheck() -> None:
    beats, bmask, sents, smask = _local_inputs(b=3, nb=3, s=2, d=3)
    beats.requires_grad_(True)
    sents.requires_grad_(True)
    loss = LocalAlignmentLoss()
    assert torch.autograd.gradcheck(lambda q, s: loss(q, bmask, s, smask)["loss"], (beats, sents), eps=1e-6, atol=1e-5)


def test_caption_loss_gradcheck() -> None:
    torch.manual_seed(0)
    cap = CaptionLoss(vocab_size=11, width=4, layers=1, heads=2, max_length=6).double()
    mem = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[1, 4, 5, 2, 0], [1, 7, 2, 0, 0]])
    att = (ids != 0).long()
    att[:, 0] = 1
    assert torch.autograd.gradcheck(lambda m: cap(m, ids, att)["loss"], (mem,), eps=1e-6, atol=1e-5)


def test_caption_loss_ignores_padding() -> None:
    logits = torch.randn(2, 4, 9)
    ids = torch.tensor([[1, 3, 4, 2, 0], [1, 5, 2, 0, 0]])
    att = (ids != 0).long()
    ref = F.cross_entropy(torch.cat([logits[0, :3], logits[1, :2]]), torch.tensor([3, 4, 2, 5, 2]))
    torch.testing.assert_close(caption_loss(logits, ids, att), ref)


def test_local_loss_aligned_lower_than_shuffled() -> None:
    g = torch.Generator().manual_seed(1)
    b, nb, s, d = 8, 6, 3, 16
    sents = torch.randn(b, s, d, generator=g)
    # Each ECG's beats are noisy copies of its own report's sentences.
    beats = torch.cat([sents, sents], 1) + 0.3 * torch.randn(b, nb, d, generator=g)
    bmask, smask = torch.ones(b, nb, dtype=torch.bool), torch.ones(b, s, dtype=torch.bool)
    loss = LocalAlignmentLoss()
    aligned = loss(beats, bmask, sents, smask)["loss"]
    perm = torch.roll(torch.arange(b), 1)
    shuffled = loss(beats[perm], bmask, sents, smask)["loss"]
    assert aligned < shuffled - 1.0


def test_caption_loss_aligned_lower_than_shuffled() -> None:
    torch.manual_seed(0)
    vocab, width, n = 12, 16, 8
    ids = torch.randint(3, vocab, (n, 6))
    ids[:, 0] = 1
    att = torch.ones_like(ids)
    embed = torch.nn.Embedding(vocab, width)
    cap = CaptionLoss(vocab_size=vocab, width=width, layers=1, heads=2, max_length=8)
    memory = lambda x: embed(x).detach()  # noqa: E731 - the ECG tokens carry the report content
    opt = torch.optim.Adam(cap.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        cap(memory(ids), ids, att)["loss"].backward()
        opt.step()
    with torch.no_grad():
        aligned = cap(memory(ids), ids, att)["loss"]
        shuffled = cap(memory(ids[torch.roll(torch.arange(n), 1)]), ids, att)["loss"]
    assert aligned < shuffled - 0.5


def test_local_loss_without_masks_equals_all_true_masks() -> None:
    beats, _, sents, _ = _local_inputs()
    ones_b = torch.ones(beats.shape[:2], dtype=torch.bool)
    ones_s = torch.ones(sents.shape[:2], dtype=torch.bool)
    loss = LocalAlignmentLoss()
    torch.testing.assert_close(loss(beats, None, sents, None)["loss"], loss(beats, ones_b, sents, ones_s)["loss"])


def test_local_loss_drops_samples_without_local_features() -> None:
    """A sample with no valid local feature takes no part: the loss equals the loss on the other samples alone."""
    beats, bmask, sents, smask = _local_inputs(b=5)
    bmask[3] = False
    loss = LocalAlignmentLoss()
    keep = torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(
        loss(beats, bmask, sents, smask)["loss"], loss(beats[keep], bmask[keep], sents[keep], smask[keep])["loss"]
    )


def test_local_loss_emulated_ranks_equal_global_batch() -> None:
    """Two emulated ranks with unequal batches (3 and 2) and a sample without beats: the rank-averaged loss and
    gradients equal the single-process loss on the concatenated batch (what gather-with-grad + DDP averaging give)."""
    beats, bmask, sents, smask = _local_inputs(b=5)
    bmask[4] = False
    beats.requires_grad_(True)
    sents.requires_grad_(True)
    full = LocalAlignmentLoss()(beats, bmask, sents, smask)["loss"]
    g_full = torch.autograd.grad(full, (beats, sents))
    parts = [slice(0, 3), slice(3, 5)]
    ok = bmask.any(1) & smask.any(1)
    counts = [ok[p].sum().double().reshape(1) for p in parts]
    total = torch.zeros((), dtype=torch.float64)
    grads = [torch.zeros_like(beats), torch.zeros_like(sents)]
    for rank, sl in enumerate(parts):
        # Call order inside the loss: local, local mask, sentences, sentence mask, then the ok-count.
        wholes = iter([beats, bmask, sents, smask])

        def gather(x, rank=rank, wholes=wholes):
            if x.ndim == 1:
                return counts
            whole = next(wholes)
            return [x if r == rank else whole[p] for r, p in enumerate(parts)]

        loss = LocalAlignmentLoss()
        loss.rank, loss.world_size, loss.gather_fn = rank, 2, gather
        value = loss(beats[sl], bmask[sl], sents[sl], smask[sl])["loss"]
        total = total + value.detach() / 2
        for acc, g in zip(grads, torch.autograd.grad(value, (beats, sents))):
            acc += g / 2
    torch.testing.assert_close(total, full.detach(), rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, g_full):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
