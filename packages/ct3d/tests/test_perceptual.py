"""Perceptual VAE term from local weights only: file formats, zero/positive distances, gradients, frozen network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_ct3d.gen import VAEModule
from vlp_ct3d.perceptual import PerceptualLoss3d, build_perceptual_network


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random MedicalNet-layout resnet10, saved as safetensors and as a MedicalNet-style .pth."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = build_perceptual_network("medicalnet_resnet10")
    # Non-trivial BatchNorm statistics, so that loading (not the init) decides the features.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("perc")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(d / "r10.safetensors"))
    # MedicalNet layout: nested under "state_dict", DataParallel "module." prefix, a segmentation head to ignore.
    medicalnet = {f"module.{k}": v for k, v in state.items()} | {"module.conv_seg.0.weight": torch.zeros(3)}
    torch.save({"state_dict": medicalnet}, d / "r10.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, d / "wrong.pth")
    return {"safetensors": d / "r10.safetensors", "pth": d / "r10.pth", "wrong": d / "wrong.pth", "state": state}


def test_weights_load_from_both_formats_and_match(weights: dict) -> None:
    a = PerceptualLoss3d("medicalnet_resnet10", weights["safetensors"])
    b = PerceptualLoss3d("medicalnet_resnet10", weights["pth"], state_dict_key="state_dict")
    for k, v in weights["state"].items():
        torch.testing.assert_close(a.net.state_dict()[k], v)
        torch.testing.assert_close(b.net.state_dict()[k], v)


def test_distance_zero_for_identical_positive_otherwise_and_gradient_reaches_input(weights: dict) -> None:
    loss = PerceptualLoss3d("medicalnet_resnet10", weights["safetensors"], stages=("layer1", "layer2"))
    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 16, 16)
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # The per-volume z-score makes it blind to a global affine intensity change (as MedicalNet's normalisation).
    assert loss(3 * x + 1, x).item() == pytest.approx(0.0, abs=1e-5)
    y = x.clone()
    y[:, :, 4:10, 4:10, 4:10] += 0.8  # a "lesion"
    d_small = loss(y, x)
    d_noise = loss(torch.rand_like(x), x)
    assert d_small.item() > 1e-4 and d_noise.item() > d_small.item()
    inp = y.clone().requires_grad_(True)
    loss(inp, x).backward()
    assert inp.grad is not None and inp.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())  # frozen


def test_network_stays_frozen_in_train_mode(weights: dict) -> None:
    loss = PerceptualLoss3d("medicalnet_resnet10", weights["safetensors"]).train()
    bn = next(m for m in loss.modules() if isinstance(m, torch.nn.BatchNorm3d))
    before = bn.running_mean.clone()
    loss(torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16))
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_clear_errors(weights: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="perceptual_weights_path"):
        VAEModule(channels=(8, 8), latent_channels=2, norm_num_groups=4, perceptual_weight=0.1)
    with pytest.raises(ValueError, match="local weights"):
        PerceptualLoss3d("medicalnet_resnet10", None)
    with pytest.raises(ValueError, match="perceptual_network"):
        VAEModule(channels=(8, 8), latent_channels=2, norm_num_groups=4, perceptual_network="vgg")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        PerceptualLoss3d("medicalnet_resnet10", tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        PerceptualLoss3d("medicalnet_resnet10", weights["wrong"])
    with pytest.raises(ValueError, match="does not fit"):  # a resnet10 file is not a resnet18
        PerceptualLoss3d("medicalnet_resnet18", weights["safetensors"])
    with pytest.raises(KeyError, match="model"):
        PerceptualLoss3d("medicalnet_resnet10", weights["pth"], state_dict_key="model")


def test_vae_training_with_perceptual_term(weights: dict, tmp_path: Path) -> None:
    from vlp_ct3d.pipeline import fit_vae

    torch.manual_seed(0)
    kw = dict(channels=(8, 8), latent_channels=2, norm_num_groups=4)
    vae = VAEModule(**kw, perceptual_weight=0.5, perceptual_weights_path=str(weights["safetensors"]))
    plain = VAEModule(**kw)
    plain.load_state_dict(vae.state_dict())
    x = torch.rand(4, 1, 16, 16, 16)
    torch.manual_seed(1)  # the forward samples the posterior
    loss, logs, recon = vae.generator_loss(x, False)
    torch.manual_seed(1)
    loss0, logs0, recon0 = plain.generator_loss(x, False)
    torch.testing.assert_close(recon, recon0)  # same VAE init: the difference is the perceptual term alone
    assert logs["perceptual"].item() > 0 and "perceptual" not in logs0
    torch.testing.assert_close(loss, loss0 + 0.5 * logs["perceptual"])
    fit_vae(vae, x, max_steps=2, batch_size=2)
    # The frozen network is not part of what is saved or optimised.
    assert not any(k.startswith(("_perceptual", "perceptual")) for k in vae.state_dict())
    opt_params = {id(p) for g in vae.configure_optimizers()[0].param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in vae.perceptual.parameters())
    vae.save_pretrained(tmp_path / "vae")
    back = VAEModule.from_pretrained(tmp_path / "vae")
    assert back.perceptual_weights_path == str(weights["safetensors"]) and back._perceptual is None
