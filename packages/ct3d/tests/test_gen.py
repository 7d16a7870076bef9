"""Tiny VAE and diffusion train steps, scale factor, save/load, samplers, generation to NIfTI, generation metrics."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vlp_ct3d.gen import LatentDiffusionModule, VAEModule, kl_divergence, make_scheduler

GEOM = {"spacing": [10.0, 10.0, 10.0], "size": [16, 16, 16], "hu_window": [-1000.0, 1000.0], "out_range": [0.0, 1.0]}


def _vae(adv: float = 0.0) -> VAEModule:
    torch.manual_seed(0)
    return VAEModule(channels=(8, 8), latent_channels=2, norm_num_groups=4, adv_weight=adv, disc_channels=8)


def _diff(objective: str = "rflow") -> LatentDiffusionModule:
    torch.manual_seed(0)
    return LatentDiffusionModule(latent_channels=2, latent_shape=(8, 8, 8), context_dim=16, context_length=5,
                                 channels=(8, 16), attention_levels=(False, True), num_head_channels=8,
                                 norm_num_groups=4, objective=objective, geometry=GEOM)  # fmt: skip


def test_kl_matches_torch_distributions() -> None:
    mu, sigma = torch.randn(3, 2, 4, 4, 4), torch.rand(3, 2, 4, 4, 4) + 0.2
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0, 1))
    torch.testing.assert_close(kl_divergence(mu, sigma), ref.flatten(1).sum(1).mean())


@pytest.mark.parametrize("adv", [0.0, 0.1])
def test_vae_train_steps_reduce_loss_and_update_both_players(adv: float) -> None:
    from vlp_ct3d.pipeline import fit_vae

    vae = _vae(adv)
    x = torch.rand(4, 1, 16, 16, 16)
    before = vae.generator_loss(x, False)[0].item()
    d0 = None if vae.discriminator is None else [p.clone() for p in vae.discriminator.parameters()]
    fit_vae(vae, x, max_steps=6, batch_size=2)
    # max_steps counts generator steps (batches), also when the discriminator adds its own optimiser steps.
    opt_g = vae.trainer.optimizers[0]
    assert {int(st["step"]) for st in opt_g.state.values()} == {6}
    assert vae.trainer.global_step == (12 if adv else 6)
    assert vae.generator_loss(x, False)[0].item() < before
    if d0 is not None:
        assert any(not torch.equal(a, b) for a, b in zip(d0, vae.discriminator.parameters()))
    # Scale factor = 1/std of posterior means over all volumes, saved as a buffer.
    mu = vae.encode(x)[0]
    assert abs(float(vae.scale_factor) - 1 / float(mu.std())) < 1e-4 * float(vae.scale_factor)
    z, s = vae.encode_latents(x)
    torch.testing.assert_close(z, mu * vae.scale_factor)  # the mean, not a sample
    assert z.std().item() == pytest.approx(1.0, rel=1e-3) and s.shape == z.shape


def test_vae_save_load_round_trip(tmp_path: Path) -> None:
    vae = _vae()
    vae.scale_factor.fill_(2.5)
    vae.save_pretrained(tmp_path / "vae")
    back = VAEModule.from_pretrained(tmp_path / "vae")
    assert float(back.scale_factor) == 2.5
    x = torch.rand(1, 1, 16, 16, 16)
    torch.testing.assert_close(back.reconstruct(x), vae.eval().reconstruct(x))


@pytest.mark.parametrize("which", ["vae", "vae_adv", "diffusion"])
def test_generative_training_resumes_exactly(which: str, tmp_path: Path) -> None:
    """Straight run vs a run stopped mid-epoch at a checkpoint, the RNG scrambled, a fresh module resumed from the
    checkpoint: identical weights (VAE posterior sampling, diffusion noise / timesteps / condition dropout and the
    EMA copy all depend on the restored RNG state and data position)."""
    from vlp_ct3d.pipeline import fit_diffusion, fit_vae

    x = torch.rand(6, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    lat = torch.randn(6, 2, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    ctx = torch.randn(6, 5, 16, generator=torch.Generator().manual_seed(3))
    # 3 batches of 2 per epoch: a stop after 4 steps is in the middle of the second epoch.
    total, stop = 7, 4

    def run(max_steps: int, seed: int = 5, **kw: object) -> torch.nn.Module:
        if which == "diffusion":
            m = _diff()
            m.cond_drop = 0.5
            return fit_diffusion(m, lat, ctx, max_steps, batch_size=2, seed=seed, **kw)
        return fit_vae(_vae(0.1 if which == "vae_adv" else 0.0), x, max_steps, batch_size=2, seed=seed, **kw)

    straight = run(total)
    run(stop, checkpoint_dir=tmp_path / "ckpt")
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain tensors and data only
    steps_per_batch = 2 if which == "vae_adv" else 1  # generator + discriminator steps
    assert saved["global_step"] == stop * steps_per_batch and "vlp_rng_ranks" in saved and "vlp_config" in saved
    torch.manual_seed(1234)  # a different process state must not matter
    resumed = run(total, resume_from=ckpt)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    # The comparison can fail: the same start with another run seed (RNG and data order) ends elsewhere.
    other = run(total, seed=6)
    assert not all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), straight.state_dict().values()))


def test_mixed_precision_training_keeps_fp32_weights_and_learns() -> None:
    """``precision="bf16-mixed"`` reaches Lightning (autocast; the weights, EMA and latent scale stay fp32) and still
    lowers the loss; an unknown name is refused before training."""
    from vlp_ct3d.pipeline import fit_diffusion, fit_vae

    vae, x = _vae(), torch.rand(4, 1, 16, 16, 16)
    before = vae.generator_loss(x, False)[0].item()
    fit_vae(vae, x, max_steps=6, batch_size=2, precision="bf16-mixed")
    assert vae.trainer.precision == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in vae.parameters()) and vae.scale_factor.dtype == torch.float32
    assert vae.generator_loss(x, False)[0].item() < before
    model, lat, ctx = _diff(), torch.randn(8, 2, 8, 8, 8), torch.randn(8, 5, 16)
    fit_diffusion(model, lat, ctx, max_steps=2, batch_size=4, precision="bf16-mixed")
    assert model.trainer.precision == "bf16-mixed"
    assert all(p.dtype == torch.float32 for p in [*model.unet.parameters(), *model.ema.parameters()])
    with pytest.raises(ValueError, match="precision must be"):
        fit_vae(_vae(), x, max_steps=1, batch_size=2, precision="bf16")


def test_schedulers_latent_settings() -> None:
    for kind in ("ddpm", "ddim"):
        assert make_scheduler(kind).clip_sample is False
    with pytest.raises(ValueError, match="scheduler must be"):
        make_scheduler("euler")


@pytest.mark.parametrize("objective", ["rflow", "eps"])
def test_diffusion_steps_ema_and_sampling(objective: str, tmp_path: Path) -> None:
    from vlp_ct3d.pipeline import fit_diffusion

    model = _diff(objective)
    lat, ctx = torch.randn(8, 2, 8, 8, 8), torch.randn(8, 5, 16)
    w0 = [p.clone() for p in model.unet.parameters()]
    fit_diffusion(model, lat, ctx, max_steps=3, batch_size=4)
    moved = [not torch.equal(a, b) for a, b in zip(w0, model.unet.parameters())]
    assert any(moved)
    # EMA differs from both the initial and the trained weights (it lags behind).
    p_ema, p_now = next(model.ema.parameters()), next(model.unet.parameters())
    assert not torch.equal(p_ema, p_now) and not torch.equal(p_ema, w0[0])
    samplers = ["rflow"] if objective == "rflow" else ["ddim", "ddpm"]
    for s in samplers:
        out = model.sample(ctx[:2], guidance=2.0, steps=3, sampler=s, generator=torch.Generator().manual_seed(0))
        again = model.sample(ctx[:2], guidance=2.0, steps=3, sampler=s, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 2, 8, 8, 8) and torch.isfinite(out).all()
        torch.testing.assert_close(out, again)
    with pytest.raises(ValueError, match="cannot sample"):
        model.sample(ctx[:1], sampler="ddim" if objective == "rflow" else "rflow")
    with pytest.raises(ValueError, match="context must be"):
        model.diffusion_loss(lat[:1], torch.randn(1, 7, 16))
    model.save_pretrained(tmp_path / "d")
    back = LatentDiffusionModule.from_pretrained(tmp_path / "d")
    torch.testing.assert_close(back.sample(ctx[:1], steps=2, generator=torch.Generator().manual_seed(1)),
                               model.sample(ctx[:1], steps=2, generator=torch.Generator().manual_seed(1)))  # fmt: skip


def test_condition_dropout_uses_the_null_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _diff().train()
    model.cond_drop = 1.0
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t, context):  # noqa: ANN001, ANN201
            seen["context"] = context
            return torch.zeros_like(x)

    monkeypatch.setattr(model, "unet", Spy())
    model.diffusion_loss(torch.randn(3, 2, 8, 8, 8), torch.randn(3, 5, 16))
    torch.testing.assert_close(seen["context"], model.null_context(3))


def test_cfg_combines_null_and_conditional_branches() -> None:
    model = _diff().eval()
    calls = []

    class Net(torch.nn.Module):
        def forward(self, x, t, context):  # noqa: ANN001, ANN201
            calls.append(context.clone())
            return context.mean(dim=(1, 2))[:, None, None, None, None].expand_as(x)

    model.ema = Net()
    ctx = torch.full((1, 5, 16), 2.0)
    x = model.sample(ctx, guidance=3.0, steps=1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(calls[0][0], model.null_context(1)[0])  # unconditional branch = the same null
    # rflow one step from t=T to 0: x = noise + v, v = u + 3 (c - u) = 0 + 3 * 2 = 6.
    noise = torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, noise + 6.0)


def _rel_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.std())


def test_sliding_window_decode_matches_full_decode_closely() -> None:
    """Tolerances, measured on this seeded tiny VAE (random weights, i.i.d. latents as a sampler starts from):
    windows ≥ the grid are the full decode (1e-5). Smaller windows are close, not exact: border voxels of a window
    see zero padding instead of neighbours and GroupNorm uses per-window statistics. Overlap with Gaussian blending
    down-weights window borders, so the error falls with overlap and with window size (measured relative RMSE:
    8³ no overlap 0.65, 8³ overlap 0.5 0.38, 12³ overlap 0.5 0.16). A misplaced or mis-scaled patch would give
    ≈ 1.4 (two unrelated signals), so these bounds catch stitching bugs while allowing the inherent error."""
    torch.manual_seed(0)
    vae = VAEModule(channels=(8, 8), latent_channels=2, norm_num_groups=4).eval()
    z = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = vae.decode(z)
        torch.testing.assert_close(vae.decode(z, window=(16, 40, 16)), full, atol=1e-5, rtol=0)
        no_overlap = _rel_rmse(vae.decode(z, window=8, overlap=0.0), full)
        overlap = _rel_rmse(vae.decode(z, window=8, overlap=0.5), full)
        large = _rel_rmse(vae.decode(z, window=12, overlap=0.5), full)
        anisotropic = vae.decode(z, window=(16, 8, 16), overlap=0.5)
    assert anisotropic.shape == full.shape == (1, 1, 32, 32, 32)
    assert large < 0.25 and overlap < 0.45 and large < overlap < no_overlap < 0.8
    assert _rel_rmse(anisotropic, full) < 0.45


@pytest.mark.parametrize(
    "kw", [{"window": 0}, {"window": (8, 8)}, {"window": 2.5}, {"window": True}, {"window": 8, "overlap": 1.0},
           {"window": 8, "overlap": -0.1}, {"window": 8, "mode": "median"}, {"window": 8, "sw_batch_size": 0}],
)  # fmt: skip
def test_sliding_window_decode_validates_its_settings(kw: dict) -> None:
    vae = _vae()
    with pytest.raises(ValueError, match="window|overlap|mode|sw_batch_size"):
        vae.decode(torch.zeros(1, 2, 8, 8, 8), **kw)


def test_generate_writes_nifti_in_hu_with_geometry(tmp_path: Path) -> None:
    from vlp_ct3d.pipeline import output_affine, write_volume

    vol = torch.zeros(1, 16, 16, 16)
    vol[0, 2:5, 8:12, 10:14] = 0.75  # +500 HU in the window [-1000, 1000] -> [0, 1]
    nii, png = write_volume(vol, GEOM, tmp_path / "gen" / "sample_0.nii.gz", title="a prompt")
    img = nib.load(str(nii))
    assert img.get_data_dtype() == np.int16 and png.is_file() and png.suffix == ".png"
    np.testing.assert_allclose(img.affine, output_affine(GEOM))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and img.header.get_zooms() == (10.0, 10.0, 10.0)
    data = np.asarray(img.dataobj)
    assert data[3, 9, 11] == 500 and data[0, 0, 0] == -1000


def test_frechet_distance_against_direct_covariance_and_monai() -> None:
    from monai.metrics import FIDMetric
    from scipy import linalg

    from vlp_ct3d.genmetrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g)
    b = torch.randn(150, 6, generator=g) @ torch.diag(torch.tensor([1.0, 2, 0.5, 1, 1, 3])) + 0.7
    an, bn = a.double().numpy(), b.double().numpy()
    ca = (an - an.mean(0)).T @ (an - an.mean(0)) / (len(an) - 1)
    cb = (bn - bn.mean(0)).T @ (bn - bn.mean(0)) / (len(bn) - 1)
    direct = ((an.mean(0) - bn.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(linalg.sqrtm(ca @ cb)))
    ours = frechet_distance(a, b)
    assert ours == pytest.approx(direct, rel=1e-9)
    assert ours == pytest.approx(float(FIDMetric()(a.double(), b.double())), rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_ms_ssim_diversity_matches_monai_pairs() -> None:
    from monai.metrics.regression import compute_ms_ssim

    from vlp_ct3d.genmetrics import _ms_ssim_metric, ms_ssim_diversity

    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 32, 32, 32, generator=g)
    samples = (base + 0.1 * torch.rand(3, 1, 32, 32, 32, generator=g)).clamp(0, 1)
    m = _ms_ssim_metric((32, 32, 32), 1.0)
    pairs = [(0, 1), (0, 2), (1, 2)]
    ref = np.mean([float(compute_ms_ssim(samples[i : i + 1], samples[j : j + 1], spatial_dims=3, data_range=1.0,
                                         kernel_size=m.kernel_size, weights=m.weights)) for i, j in pairs])  # fmt: skip
    assert ms_ssim_diversity(samples) == pytest.approx(ref, rel=1e-5)
    same = ms_ssim_diversity(torch.cat([base, base]))
    assert same == pytest.approx(1.0, abs=1e-4) and ms_ssim_diversity(samples) < same
