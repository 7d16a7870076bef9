from __future__ import annotations

import torch

from vlp_core.losses import ClipLoss
from vlp_ecg.models import pool_beats


def test_clip_rhythm_loss_aligned_lower_than_shuffled() -> None:
    g = torch.Generator().manual_seed(2)
    text = torch.randn(16, 32, generator=g)
    ecg = text + 0.2 * torch.randn(16, 32, generator=g)
    clip = ClipLoss()
    assert clip(ecg, text)["loss"] < clip(ecg[torch.roll(torch.arange(16), 3)], text)["loss"] - 1.0


def test_pool_beats_against_loop() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, 20, 4)
    rpeaks = torch.tensor([[30, 100, 170, -1], [5, 60, -1, -1]])
    beats, mask = pool_beats(tokens, rpeaks, stride=10, fs=100.0, before=0.2, after=0.3)
    assert mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    for b in range(2):
        for k in range(4):
            r = int(rpeaks[b, k])
            if r < 0:
                assert beats[b, k].abs().sum() == 0
                continue
            sel = [n for n in range(20) if r - 20 <= (n + 0.5) * 10 < r + 30]
            torch.testing.assert_close(beats[b, k], tokens[b, sel].mean(0))
