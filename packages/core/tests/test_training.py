"""Pretrainer: learns, resumes exactly, shares as safetensors + JSON, optimiser conventions, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from vlp_core.losses import ClipLoss, SigLipLoss
from vlp_core.testing import BoringTower, RandomPairs
from vlp_core.training import LossTerm, PairedDataModule, Pretrainer, collate_paired, param_groups


def _model(loss: nn.Module | None = None, **kw) -> Pretrainer:
    torch.manual_seed(0)
    return Pretrainer(
        {"x": BoringTower(), "y": BoringTower()},
        [LossTerm("clip", loss or ClipLoss(), inputs=("x", "y"))],
        **{"lr": 5e-3, "weight_decay": 0.01, **kw},
    )


def _trainer(tmp_path: Path, max_steps: int, **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing="callbacks" in kw, deterministic=True,
        default_root_dir=tmp_path, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("loss", [ClipLoss, SigLipLoss])
def test_overfits_one_batch(loss, tmp_path: Path) -> None:
    """40 steps on one batch of 16 pairs: ClipLoss from ~log(16)=2.77 to < 0.1; SigLIP likewise to < 1."""
    model = _model(loss())
    batch = collate_paired([RandomPairs(16)[i] for i in range(16)])
    opt = model.configure_optimizers()["optimizer"]
    first = model.compute_losses(batch)["loss"].item()
    for _ in range(40):
        opt.zero_grad()
        model.compute_losses(batch)["loss"].backward()
        opt.step()
        model.clamp_parameters()
    last = model.compute_losses(batch)["loss"].item()
    bound = 0.1 if loss is ClipLoss else 1.0
    assert last < bound < first, (first, last)


@pytest.mark.parametrize("stop", [4, 6])
def test_resume_is_identical_to_uninterrupted(tmp_path: Path, stop: int) -> None:
    """8 steps straight vs ``stop`` steps in a process that then exits, resumed from its .ckpt in a fresh process:
    identical weights and optimiser state (the towers use dropout, so the RNG state must be restored too). Epochs
    are 4 steps long, so stop=6 resumes mid-epoch: the data loader must continue after the batches already seen."""
    import subprocess
    import sys

    script = Path(__file__).with_name("resume_script.py")

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    run("straight", str(tmp_path / "straight.pt"))
    run("first", str(tmp_path / "ckpt"), str(stop))
    ckpt = next((tmp_path / "ckpt").glob(f"*step={stop}.ckpt"))
    assert "state_dict" in torch.load(ckpt, weights_only=True)  # plain data: loads without unpickling code
    run("resume", str(tmp_path / "resumed.pt"), str(ckpt))

    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert straight["step"] == resumed["step"] == 8
    for key, value in straight["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, rtol=0, atol=0, msg=key)
    for idx, state in straight["optim"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(resumed["optim"]["state"][idx][key], state[key], rtol=0, atol=0)


def test_save_and_load_pretrained_roundtrip(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.losses[0].loss.logit_scale.fill_(3.0)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = Pretrainer.from_pretrained(tmp_path / "m")
    x = torch.randn(4, 8)
    torch.testing.assert_close(loaded.encode("x", x).embedding, model.encode("x", x).embedding)
    assert loaded.losses[0].loss.logit_scale.item() == 3.0
    assert loaded.lr == model.lr and loaded.weight_decay == model.weight_decay
    with pytest.raises(FileNotFoundError, match="config.json"):
        Pretrainer.from_pretrained(tmp_path)


def test_from_pretrained_returns_eval_mode_so_batch_norm_uses_saved_statistics(tmp_path: Path) -> None:
    from vlp_core.towers import ImageTower

    torch.manual_seed(0)
    tower = ImageTower("resnet10t", embed_dim=8, in_chans=1)
    model = Pretrainer({"image": tower, "x": BoringTower(8, 8)}, [LossTerm("clip", ClipLoss(), inputs=("image", "x"))])
    tower(torch.randn(6, 1, 32, 32))  # training mode: moves the running statistics away from their init
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = Pretrainer.from_pretrained(tmp_path / "m")
    assert not loaded.training and not any(m.training for m in loaded.modules())
    x = torch.randn(3, 1, 32, 32)  # a batch-statistics forward (training mode) would not match
    torch.testing.assert_close(loaded.encode("image", x).embedding, model.encode("image", x).embedding)


def test_weight_decay_groups_exclude_norms_biases_and_temperatures() -> None:
    model = _model()
    groups = param_groups(model.named_parameters(), lr=1.0, weight_decay=0.2, lr_multipliers={"towers.y": 0.1})
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    free = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "losses.0.loss.logit_scale" in free
    assert all(".bias" not in n for n in decayed) and "towers.x.net.1.weight" in free  # LayerNorm weight
    assert decayed == {f"towers.{t}.net.{i}.weight" for t in "xy" for i in (0, 3)}
    lrs = {n: g["lr"] for g in groups for n in g["names"]}
    assert lrs["towers.y.net.0.weight"] == pytest.approx(0.1) and lrs["towers.x.net.0.weight"] == 1.0


def test_temperature_is_clamped_after_each_step(tmp_path: Path) -> None:
    model = _model(lr=10.0)  # a huge LR pushes the log-scale far past ln(100) in one step
    with torch.no_grad():
        model.losses[0].loss.logit_scale.fill_(math.log(99.0))
    _trainer(tmp_path, 3).fit(model, PairedDataModule(batch_size=8, train_set=RandomPairs(32)))
    assert model.losses[0].loss.logit_scale.exp().item() <= 100.0 + 1e-4


def test_logs_every_term_and_temperature(tmp_path: Path) -> None:
    model = Pretrainer(
        {"x": BoringTower(), "y": BoringTower()},
        [LossTerm("clip", ClipLoss(), 1.0, ("x", "y")), LossTerm("sig", SigLipLoss(), 0.5, ("x", "y"))],
    )
    trainer = _trainer(tmp_path, 2)
    trainer.fit(model, PairedDataModule(batch_size=8, train_set=RandomPairs(32)))
    keys = set(trainer.callback_metrics)
    assert {"train/loss", "train/clip", "train/sig", "train/clip/logit_scale", "train/sig/logit_bias"} <= keys
    logs = model.compute_losses(collate_paired([RandomPairs(8)[i] for i in range(8)]))
    torch.testing.assert_close(logs["loss"], logs["clip"] + 0.5 * logs["sig"])


def test_bad_inputs_name_the_problem() -> None:
    model = _model()
    with pytest.raises(KeyError, match="unknown tower 'z'"):
        model.encode("z", torch.randn(2, 8))
    with pytest.raises(KeyError, match="needs field 'y'"):
        model.compute_losses({"x": torch.randn(4, 8)})
    with pytest.raises(ValueError, match="NaN"):
        model.compute_losses({"x": torch.full((4, 8), float("nan")), "y": torch.randn(4, 8)})
    with pytest.raises(ValueError, match="unique"):
        Pretrainer({"x": BoringTower()}, [LossTerm("a", ClipLoss()), LossTerm("a", ClipLoss())])
    from vlp_core.registry import TOWERS

    with pytest.raises(KeyError, match="unknown tower 'nope'"):
        TOWERS.get("nope")


def test_collate_pads_variable_length_and_keeps_strings() -> None:
    out = collate_paired([{"ids": torch.tensor([1, 2, 3]), "t": "a"}, {"ids": torch.tensor([4]), "t": "b"}])
    assert out["ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out["ids_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert out["t"] == ["a", "b"]
    with pytest.raises(KeyError, match="sample 1"):
        collate_paired([{"a": 1}, {"b": 2}])
