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
