"""``vlp_ecg.models.load_model`` opens checkpoints with weights_only=True and rebuilds through the safe config path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vlp_core.config import UnsafeConfigError
from vlp_core.training import Pretrainer
from vlp_ecg.models import MELP, load_model


@pytest.fixture(scope="module")
def tiny() -> MELP:
    torch.manual_seed(0)
    return MELP(size="tiny", embed_dim=32, token_dim=32, text_max_length=32, decoder_layers=1, max_captions=8).eval()


def _lightning_like_ckpt(model: MELP, path: Path, **extra: object) -> Path:
    """What Lightning writes: state_dict + hyper_parameters, plus what Pretrainer.on_save_checkpoint adds."""
    ckpt: dict = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": 0}
    model.on_save_checkpoint(ckpt)
    ckpt.update(extra)
    torch.save(ckpt, path)
    return path


def test_ckpt_rebuilds_from_vlp_config(tiny: MELP, tmp_path: Path) -> None:
    path = _lightning_like_ckpt(tiny, tmp_path / "m.ckpt")
    loaded = load_model(str(path)).eval()
    assert type(loaded) is Pretrainer and [t.name for t in loaded.losses] == ["rhythm", "token", "beat"]
    x = torch.randn(2, 12, 1000)
    torch.testing.assert_close(loaded.towers["ecg"](x).embedding, tiny.towers["ecg"](x).embedding)


def test_ckpt_without_vlp_config_uses_hyper_parameters(tiny: MELP, tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    hp = {"size": "tiny", "embed_dim": 32, "token_dim": 32, "text_max_length": 32, "decoder_layers": 1}
    torch.save({"state_dict": tiny.state_dict(), "hyper_parameters": {**hp, "max_captions": 8}}, path)
    loaded = load_model(str(path)).eval()
    x = torch.randn(2, 12, 1000)
    torch.testing.assert_close(loaded.towers["ecg"](x).embedding, tiny.towers["ecg"](x).embedding)


class _Payload:
    """Unpickling this object would create a file: the classic malicious-checkpoint pattern."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.sentinel}",))


def test_pickled_code_in_ckpt_is_refused_and_not_run(tiny: MELP, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = _lightning_like_ckpt(tiny, tmp_path / "evil.ckpt", callbacks={"x": _Payload(str(sentinel))})
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_model(str(path))
    assert not sentinel.exists()


def test_malicious_vlp_config_is_refused(tiny: MELP, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = _lightning_like_ckpt(tiny, tmp_path / "evil.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["vlp_config"] = json.dumps({"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(sentinel)]}})
    torch.save(ckpt, path)
    with pytest.raises(UnsafeConfigError, match="subprocess.Popen"):
        load_model(str(path))
    assert not sentinel.exists()


def test_registered_ecg_names_work_as_class_paths() -> None:
    from vlp_core.config import from_config
    from vlp_ecg.models import ECGTower

    tower = from_config({"class_path": "ecg/resnet1d", "init_args": {"size": "tiny", "embed_dim": 8, "beats": "none"}})
    assert isinstance(tower, ECGTower) and tower.output_dim == 8


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="save_pretrained folder or a Lightning .ckpt"):
        load_model(str(tmp_path / "nope.ckpt"))
