"""Two-view visual self-supervision: seeded torch augmentations, NT-Xent, and the objective's ssl term."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlp_surgical.augment import ViewParams, apply_view, augment_frames, sample_view_params
from vlp_surgical.losses import nt_xent


def _frames(n: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _params(n: int, box=(0.0, 0.0, 1.0, 1.0), flip=False, jitter=(1.0, 1.0, 1.0)) -> ViewParams:
    return ViewParams(torch.tensor([box] * n, dtype=torch.float64), torch.tensor([flip] * n),
                      torch.tensor([jitter] * n, dtype=torch.float64))  # fmt: skip


def test_identity_flip_and_crop_are_exact() -> None:
    x = _frames()
    torch.testing.assert_close(apply_view(x, _params(4)), x)
    torch.testing.assert_close(apply_view(x, _params(4, flip=True)), x.flip(-1))
    # The right half, resized back to full width, equals bilinear interpolation of that half; only the first column
    # differs: it samples at x = 7.75, between the crop's first pixel and its real left neighbour (not clamped).
    right = apply_view(x, _params(4, box=(0.5, 0.0, 0.5, 1.0)))
    ref = F.interpolate(x[..., 8:], size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(right[..., 1:], ref[..., 1:])
    torch.testing.assert_close(right[..., 0], 0.25 * x[..., 7] + 0.75 * x[..., 8])
    tl = apply_view(x, _params(4, box=(0.0, 0.0, 0.5, 0.5)))
    ref = F.interpolate(x[..., :6, :8], size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(tl[..., :-1, :-1], ref[..., :-1, :-1])
    assert apply_view(x, _params(4, box=(0.0, 0.0, 0.5, 0.5)), size=5).shape == (4, 3, 5, 5)


def test_colour_jitter_factors() -> None:
    x = _frames() * 0.5
    bright = apply_view(x, _params(4, jitter=(1.5, 1.0, 1.0)))
    torch.testing.assert_close(bright, (x * 1.5).clamp(0, 1))
    gray = apply_view(x, _params(4, jitter=(1.0, 1.0, 0.0)))  # saturation 0: all channels equal
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    flat = apply_view(x, _params(4, jitter=(1.0, 0.0, 1.0)))  # contrast 0: a constant gray level per frame
    assert float(flat.std(dim=(2, 3)).max()) < 0.2 * float(x.std(dim=(2, 3)).min())


def test_views_are_seeded_grouped_and_random() -> None:
    x = _frames(6)
    x[1], x[2] = x[0], x[0]  # frames 0-2 identical
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    a = augment_frames(x, torch.Generator().manual_seed(3), groups)
    b = augment_frames(x, torch.Generator().manual_seed(3), groups)
    c = augment_frames(x, torch.Generator().manual_seed(4), groups)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(a[0], a[1])  # same group, same frame -> same view
    assert not torch.allclose(a[1], a[2])  # same frame, different groups -> different views
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    p = sample_view_params(500, torch.Generator().manual_seed(0), scale=(0.3, 1.0))
    area = p.box[:, 2] * p.box[:, 3]
    assert float(area.max()) <= 1 + 1e-12 and float(area.min()) >= 0.2
    assert bool(((p.box[:, 0] + p.box[:, 2]) <= 1 + 1e-12).all()) and 0.35 < float(p.flip.double().mean()) < 0.65


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = F.normalize(torch.cat((z1, z2)), dim=-1)
    n, b = z.shape[0], z1.shape[0]
    total = z.new_zeros(())
    for i in range(n):
        pos = (i + b) % n
        others = [j for j in range(n) if j != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[j] / t for j in others]), 0)
        total = total + denom - z[i] @ z[pos] / t
    return total / n


def test_nt_xent_reference_gradcheck_and_alignment() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(nt_xent(z1, z2, 0.2), _nt_xent_loop(z1, z2, 0.2))
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.2), (z1, z2))
    base = torch.randn(16, 8, generator=g)
    v1, v2 = base + 0.1 * torch.randn(16, 8, generator=g), base + 0.1 * torch.randn(16, 8, generator=g)
    assert float(nt_xent(v1, v2)) < float(nt_xent(v1, v2[torch.randperm(16, generator=g)])) - 1.0
    with pytest.raises(ValueError, match="two views"):
        nt_xent(v1, v2[:3])


def test_objective_ssl_term_trains_the_backbone(tmp_path: Path) -> None:
    from vlp_surgical.models import HecVL
    from vlp_surgical.synth import make_procedures
    from vlp_surgical.training import HecVLObjective, ProcedureCorpus, build_batch

    root = make_procedures(tmp_path / "p", n_train=1, n_val=0, n_test=0, size=32, phase_seconds=(2.0, 3.0))
    batch = build_batch(ProcedureCorpus(root, "train").items)
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16)
    off = HecVLObjective(dtw_weight=0.0)(model, batch)
    assert "ssl" not in off
    objective = HecVLObjective(dtw_weight=0.0, ssl_weight=0.5, ssl_max_clips=6, seed=1)
    out = objective(model, batch)
    assert torch.isfinite(out["ssl"]) and float(out["ssl"].detach()) > 0
    torch.testing.assert_close(out["loss"], off["loss"] + 0.5 * out["ssl"])
    model.zero_grad(set_to_none=True)
    out["ssl"].backward()
    first = next(p for p in model.backbone.parameters() if p.ndim == 4)
    assert first.grad is not None and float(first.grad.abs().sum()) > 0  # views go through the frame encoder
    assert all(p.grad is None for p in model.vis_proj["phase"].parameters())  # ... and the clip space only
    again = HecVLObjective(dtw_weight=0.0, ssl_weight=0.5, ssl_max_clips=6, seed=1)(model, batch)["ssl"]
    torch.testing.assert_close(again, out["ssl"])  # seeded views
