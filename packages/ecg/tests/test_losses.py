from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp_core.losses import ClipLoss
from vlp_ecg.losses import CaptionLoss, LocalAlignmentLoss, caption_loss, local_alignment_scores
from vlp_ecg.models import pool_beats


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


def test_clip_rhythm_loss_aligned_lower_than_shuffled() -> None:
    g = torch.Generator().manual_seed(2)
    text = torch.randn(16, 32, generator=g)
    ecg = text + 0.2 * torch.randn(16, 32, generator=g)
    clip = ClipLoss()
    assert clip(ecg, text)["loss"] < clip(ecg[torch.roll(torch.arange(16), 3)], text)["loss"] - 1.0


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


def test_pool_beats_against_loop() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, 20, 4)
    rpeaks = torch.tensor([[30, 100, 170, -1], [5, 60, -1, -1]])
    beats, mask = pool_beats(tokens, rpeaks, stride=10, fs=100.0, before=0.2, after=0.3, offset=5.0)
    assert mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    for b in range(2):
        for k in range(4):
            r = int(rpeaks[b, k])
            if r < 0:
                assert beats[b, k].abs().sum() == 0
                continue
            sel = [n for n in range(20) if r - 20 <= (n + 0.5) * 10 < r + 30]
            torch.testing.assert_close(beats[b, k], tokens[b, sel].mean(0))
