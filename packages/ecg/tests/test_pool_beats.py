"""Beat pooling uses each encoder's real token centres: a spike lands in the beat window of the tokens that see it."""

from __future__ import annotations

import pytest
import torch

from vlp_ecg.models import ECGTower, ResNet1d, ViT1d, conv_geometry, pool_beats


def _responding_tokens(encoder: torch.nn.Module, t: int, length: int = 1000) -> torch.Tensor:
    """Indices of the tokens whose output changes when a unit spike is put at sample ``t`` (eval mode, float64)."""
    encoder = encoder.double().eval()
    base = torch.zeros(1, 12, length, dtype=torch.float64)
    spike = base.clone()
    spike[0, :, t] = 1.0
    with torch.no_grad():
        diff = (encoder(spike) - encoder(base)).abs().amax(-1)[0]
    return torch.nonzero(diff > 1e-9).flatten()


@pytest.mark.parametrize("t", [413, 500, 509, 517, 605])
def test_resnet_spike_lands_in_the_window_of_the_tokens_that_respond(t: int) -> None:
    torch.manual_seed(0)
    enc = ResNet1d(width=8, layers=(1, 1, 1, 1))
    assert (enc.stride, enc.offset) == (16, 0.0)  # padded strided convs centre token n on sample 16n, not 16n + 8
    resp = _responding_tokens(enc, t)
    centres = enc.token_centers(63)
    # The responding tokens are exactly those whose receptive field (derived from the geometry) covers the spike.
    half = (enc.receptive_field - 1) / 2
    predicted = torch.nonzero((centres - t).abs() <= half).flatten()
    assert set(resp.tolist()) <= set(predicted.tolist()) and len(resp) >= len(predicted) - 2
    # Their midpoint is the token centred nearest the spike, which a beat window around the spike contains.
    mid = float(resp.double().mean())
    nearest = int((centres - t).abs().argmin())
    assert abs(mid - nearest) <= 0.5 + 1e-9
    tokens = torch.eye(63).unsqueeze(0)  # token n = one-hot n: pooling reveals which tokens were taken
    pooled, _ = pool_beats(tokens, torch.tensor([[t]]), enc.stride, 100.0, before=0.0, after=0.0, offset=enc.offset)
    assert int(pooled[0, 0].argmax()) == nearest
    win, _ = pool_beats(tokens, torch.tensor([[t]]), enc.stride, 100.0, before=0.1, after=0.1, offset=enc.offset)
    assert win[0, 0, nearest] > 0
    # The old (n + 0.5) * stride assumption picks another token for spikes late in a token's stride.
    old = t // enc.stride  # the token whose [n*stride, (n+1)*stride) span contains t
    if t % 16 >= 9:
        assert old != nearest


def test_vit_patch_centres() -> None:
    torch.manual_seed(0)
    enc = ViT1d(patch=10, width=16, depth=1, heads=2)
    assert (enc.stride, enc.offset) == (10, 4.5)
    # Attention mixes all tokens, so test the patch embedding itself: the spike's patch is the one centred nearest.
    t = 537
    with torch.no_grad():
        spike = torch.zeros(1, 12, 1000)
        spike[0, :, t] = 1.0
        d = (enc.embed(spike) - enc.embed(torch.zeros_like(spike))).abs().amax(1)[0]
    assert torch.nonzero(d > 0).flatten().tolist() == [int((enc.token_centers(100) - t).abs().argmin())] == [53]


def test_conv_geometry_composition() -> None:
    convs = [torch.nn.Conv1d(1, 1, 15, 2, 7), torch.nn.Conv1d(1, 1, 7, 2, 3), torch.nn.Conv1d(1, 1, 4, 4, 0)]
    stride, offset, rf = conv_geometry(convs)
    assert stride == 16 and offset == 0 + 0 + 4 * 1.5 and rf == 1 + 14 + 2 * 6 + 4 * 3
    # Empirically: the chain's output j depends on inputs [offset + 16 j - (rf-1)/2, offset + 16 j + (rf-1)/2].
    net = torch.nn.Sequential(*convs).double()
    x = torch.zeros(1, 1, 400, dtype=torch.float64, requires_grad=True)
    net(x)[0, 0, 10].backward()
    hit = torch.nonzero(x.grad[0, 0]).flatten()
    assert float(hit.double().mean()) == pytest.approx(offset + 16 * 10, abs=0.5)


def test_tower_passes_geometry_to_pooling() -> None:
    torch.manual_seed(0)
    tower = ECGTower("resnet1d", "tiny", fs=100.0, embed_dim=8, token_dim=8, beats="rpeak").eval()
    x = torch.randn(1, 12, 1000)
    tokens = tower.features(x)
    r = torch.tensor([[509]])
    ref, _ = pool_beats(tokens, r, 16, 100.0, offset=0.0)
    with torch.no_grad():
        out = tower({"signal": x, "rpeaks": r})
        torch.testing.assert_close(out.extras["beats"], tower.beat_proj(ref))
