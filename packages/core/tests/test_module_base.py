"""VlpModule: the sharing and resume base that the Pretrainer and non-contrastive modules (generative ones) share."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from vlp_core.config import ConfigError, UnsafeConfigError
from vlp_core.training import CONFIG_NAME, Pretrainer, VlpModule

MODULE_SRC = """
import torch
from vlp_core.config import Configurable
from vlp_core.training import VlpModule


class Gen(Configurable, VlpModule):
    def __init__(self, width: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        self.net = torch.nn.Linear(width, width)
        self.register_buffer("scale", torch.tensor(scale))  # a buffer must travel with the weights


class NoConfig(VlpModule):
    pass
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A user's own generative module, outside the ``vlp_*`` allow-list (as code in a research script would be)."""
    (tmp_path / "user_gen_mod.py").write_text(MODULE_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_gen_mod

    yield user_gen_mod
    sys.modules.pop("user_gen_mod", None)


def test_configurable_module_round_trips_with_its_buffers(tmp_path: Path, user_module) -> None:  # noqa: ANN001
    model = user_module.Gen(width=3, scale=2.5)
    folder = model.save_pretrained(tmp_path / "gen")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config == {"class_path": "user_gen_mod.Gen", "init_args": {"width": 3, "scale": 2.5}}
    # Not a vlp class: rebuilding it would import and run the user's code, so it needs trust_code.
    with pytest.raises(UnsafeConfigError, match="user_gen_mod.Gen"):
        user_module.Gen.from_pretrained(folder)
    back = user_module.Gen.from_pretrained(folder, trust_code=True)
    assert not back.training and float(back.scale) == 2.5
    x = torch.randn(2, 3)
    torch.testing.assert_close(back.net(x), model.net(x))


def test_from_pretrained_checks_the_class(tmp_path: Path, user_module) -> None:  # noqa: ANN001
    folder = user_module.Gen().save_pretrained(tmp_path / "gen")
    with pytest.raises(TypeError, match="describes Gen, not a Pretrainer"):
        Pretrainer.from_pretrained(folder, trust_code=True)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        user_module.Gen.from_pretrained(folder, trust_code=True)


def test_a_module_without_a_config_says_so(user_module) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="NoConfig cannot describe itself"):
        user_module.NoConfig().config()


def test_checkpoint_hooks_restore_the_rng_state(user_module) -> None:  # noqa: ANN001
    model = user_module.Gen()
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    assert json.loads(checkpoint["vlp_config"])["class_path"] == "user_gen_mod.Gen"
    assert len(checkpoint["vlp_rng_ranks"]) == 1
    expected = (torch.rand(3), torch.randint(0, 10**6, (1,)))
    torch.manual_seed(99)
    model.on_load_checkpoint(checkpoint)
    torch.testing.assert_close((torch.rand(3), torch.randint(0, 10**6, (1,))), expected)
    assert isinstance(model, VlpModule)


class _Payload:
    """Unpickling this object would create a file: the classic malicious-checkpoint pattern."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, (f"touch {self.sentinel}",))


def _ckpt(model: VlpModule, path: Path, with_config: bool = True, **extra: object) -> Path:
    """What Lightning writes (state_dict) plus what VlpModule.on_save_checkpoint adds."""
    checkpoint: dict = {"state_dict": model.state_dict(), "epoch": 0}
    model.on_save_checkpoint(checkpoint)
    if not with_config:
        del checkpoint["vlp_config"]
    torch.save({**checkpoint, **extra}, path)
    return path


def test_from_checkpoint_rebuilds_safely(tmp_path: Path, user_module) -> None:  # noqa: ANN001
    model = user_module.Gen(width=3, scale=1.5)
    path = _ckpt(model, tmp_path / "gen.ckpt")
    with pytest.raises(UnsafeConfigError, match="user_gen_mod.Gen"):
        user_module.Gen.from_checkpoint(path)
    back = user_module.Gen.from_checkpoint(path, trust_code=True)
    assert not back.training and float(back.scale) == 1.5
    x = torch.randn(2, 3)
    torch.testing.assert_close(back.net(x), model.net(x))
    with pytest.raises(TypeError, match="describes Gen, not a Pretrainer"):
        Pretrainer.from_checkpoint(path, trust_code=True)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        VlpModule.from_checkpoint(tmp_path / "missing.ckpt")


def test_from_checkpoint_without_config_needs_a_legacy_builder(tmp_path: Path, user_module) -> None:  # noqa: ANN001
    model = user_module.Gen(width=2, scale=3.0)
    path = _ckpt(model, tmp_path / "old.ckpt", with_config=False)
    with pytest.raises(ValueError, match="no 'vlp_config'"):
        user_module.Gen.from_checkpoint(path)
    back = user_module.Gen.from_checkpoint(path, legacy=lambda ckpt: user_module.Gen(width=2))
    assert float(back.scale) == 3.0  # the weights (buffers included) come from the file, not the builder
    torch.testing.assert_close(back.net.weight, model.net.weight)


def test_from_checkpoint_refuses_pickled_code(tmp_path: Path, user_module) -> None:  # noqa: ANN001
    sentinel = tmp_path / "pwned"
    path = _ckpt(user_module.Gen(), tmp_path / "evil.ckpt", callbacks={"x": _Payload(str(sentinel))})
    with pytest.raises(ValueError, match="refusing to unpickle"):
        user_module.Gen.from_checkpoint(path, trust_code=True)
    assert not sentinel.exists()
