"""Loading a shared config or checkpoint never runs code it names (issue 6, section 1)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vlp_core.config import UnsafeConfigError, from_config, to_config
from vlp_core.losses import ClipLoss
from vlp_core.testing import BoringTower
from vlp_core.training import LossTerm, Pretrainer

REPO = Path(__file__).resolve().parents[3]


def _model() -> Pretrainer:
    torch.manual_seed(0)
    towers = {"x": BoringTower(8, 16), "y": BoringTower(8, 16)}
    return Pretrainer(towers, [LossTerm("clip", ClipLoss(), inputs=("x", "y"))])


def _saved(tmp_path: Path) -> tuple[Path, dict]:
    folder = _model().save_pretrained(tmp_path / "ckpt")
    return folder, json.loads((folder / "config.json").read_text())


def _write(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("class_path", "init_args"),
    [
        ("subprocess.Popen", {"args": ["touch", "{sentinel}"]}),
        ("os.system", {"command": "touch {sentinel}"}),
        ("builtins.eval", {"source": "open(r'{sentinel}', 'w')"}),
        ("builtins.exec", {"source": "open(r'{sentinel}', 'w')"}),
        ("pathlib.Path.touch", {"self": "{sentinel}"}),
    ],
)
def test_malicious_tower_is_refused_and_nothing_runs(tmp_path: Path, class_path: str, init_args: dict) -> None:
    folder, config = _saved(tmp_path)
    sentinel = tmp_path / "pwned"
    args = json.loads(json.dumps(init_args).replace("{sentinel}", str(sentinel)))
    config["init_args"]["towers"]["x"] = {"class_path": class_path, "init_args": args}
    _write(folder, config)
    with pytest.raises(UnsafeConfigError, match=rf"{class_path.replace('.', '[.]')}.*trust_code=True"):
        Pretrainer.from_pretrained(folder)
    assert not sentinel.exists()


def test_malicious_top_level_class_is_refused(tmp_path: Path) -> None:
    folder, config = _saved(tmp_path)
    sentinel = tmp_path / "pwned"
    _write(folder, {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(sentinel)]}})
    with pytest.raises(UnsafeConfigError, match="not on the allow-list"):
        Pretrainer.from_pretrained(folder)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("class_path", "why"),
    [
        ("vlp_core.registry.Registry", "not a torch.nn.Module"),  # allow-listed module, but not a Module class
        ("vlp_core.towers.text.Path", "not a torch.nn.Module"),  # a re-exported foreign class (pathlib.Path)
        ("vlp_core.toy.run_core_demo", "not a class"),  # a function that would run a whole demo
        ("torch.nn.parameter.Parameter", "not a torch.nn.Module"),
        ("torch.nnx.Linear", "not on the allow-list"),  # prefix match is by module component, not by text
        ("vlp_core.towers.image.timm.layers.Mlp", "cannot import|allow-list"),
    ],
)
def test_allow_listed_modules_still_need_module_classes(class_path: str, why: str) -> None:
    with pytest.raises((UnsafeConfigError, ValueError), match=why):
        from_config({"class_path": class_path, "init_args": {}})


def test_refusal_happens_before_the_module_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = tmp_path / "imported"
    (tmp_path / "evil_plugin_mod.py").write_text(
        f"from pathlib import Path\nPath(r'{sentinel}').touch()\nimport torch\n\n"
        "class Net(torch.nn.Linear):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"class_path": "evil_plugin_mod.Net", "init_args": {"in_features": 2, "out_features": 3}}
    with pytest.raises(UnsafeConfigError, match="evil_plugin_mod.Net"):
        from_config(config)
    assert not sentinel.exists() and "evil_plugin_mod" not in sys.modules
    # The explicit opt-in builds it (and so runs its module code): the user asked for it.
    net = from_config(config, trust_code=True)
    assert isinstance(net, nn.Linear) and net.out_features == 3 and sentinel.exists()
    sys.modules.pop("evil_plugin_mod", None)


def test_trust_code_reaches_from_pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_towers_mod.py").write_text(
        "from vlp_core.testing import BoringTower\n\nclass MyTower(BoringTower):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    folder, config = _saved(tmp_path)
    config["init_args"]["towers"]["x"]["class_path"] = "my_towers_mod.MyTower"
    _write(folder, config)
    with pytest.raises(UnsafeConfigError, match="my_towers_mod.MyTower"):
        Pretrainer.from_pretrained(folder)
    model = Pretrainer.from_pretrained(folder, trust_code=True)
    assert type(model.towers["x"]).__name__ == "MyTower"
    sys.modules.pop("my_towers_mod", None)


def test_normal_round_trip_still_works(tmp_path: Path) -> None:
    model = _model().eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    loaded = Pretrainer.from_pretrained(folder).eval()
    x = torch.randn(4, 8)
    torch.testing.assert_close(loaded.towers["x"](x).embedding, model.towers["x"](x).embedding)
    assert loaded.config() == model.config()


def test_torch_nn_classes_are_allowed() -> None:
    lin = from_config({"class_path": "torch.nn.Linear", "init_args": {"in_features": 3, "out_features": 2}})
    assert isinstance(lin, nn.Linear) and lin.weight.shape == (2, 3)


def test_registered_names_work_as_class_paths() -> None:
    loss = from_config({"class_path": "core/clip", "init_args": {}})
    assert isinstance(loss, ClipLoss)
    term = from_config(
        {"class_path": "vlp_core.training.LossTerm",
         "init_args": {"name": "clip", "loss": {"class_path": "core/clip"}, "inputs": ["x", "y"]}}
    )  # fmt: skip
    assert isinstance(term, LossTerm) and isinstance(term.loss, ClipLoss)
    # The object still serialises to its dotted class path, so the saved config round-trips.
    assert to_config(term)["init_args"]["loss"]["class_path"] == "vlp_core.losses.clip.ClipLoss"
    with pytest.raises(ValueError, match="no vlp registry has it"):
        from_config({"class_path": "core/none-such", "init_args": {}})


def test_registered_entries_outside_the_prefixes_are_allowed() -> None:
    from vlp_core import registry

    registry.TOWERS.register("test/ordered", "collections:OrderedDict")
    try:
        # Registered (by an installed plug-in) = allowed, by name and by dotted path.
        assert from_config({"class_path": "test/ordered", "init_args": {"a": 1}}) == {"a": 1}
        assert from_config({"class_path": "collections.OrderedDict", "init_args": {"b": 2}}) == {"b": 2}
    finally:
        registry.TOWERS.unregister("test/ordered")
    with pytest.raises(UnsafeConfigError):
        from_config({"class_path": "collections.OrderedDict", "init_args": {"b": 2}})


# ---------------------------------------------------------------------------------------------- source scan
_SCANNED = ("packages", "benchmarks", "tests")


def unsafe_loads(source: str, filename: str = "<string>") -> list[str]:
    """Calls that can unpickle code: ``torch.load`` without ``weights_only=True``, ``pickle.load(s)``,
    ``numpy.load(allow_pickle=True)`` and ``weights_only=False`` anywhere."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}"
        if name == "load" and owner == "torch":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if name in ("load", "loads", "Unpickler") and owner in ("pickle", "cPickle", "dill", "cloudpickle", "joblib"):
            found.append(f"{where}: {owner}.{name}")
        for key in ("weights_only", "allow_pickle"):
            value = kw.get(key)
            safe = isinstance(value, ast.Constant) and value.value is (key == "weights_only")
            reported = name == "load" and owner == "torch" and key == "weights_only"  # reported above
            if key in kw and not safe and not reported:
                found.append(f"{where}: {key}={ast.unparse(value)}")
    return found


def test_scanner_catches_unsafe_loads() -> None:
    bad = (
        "import torch, pickle, numpy as np\n"
        "torch.load('a')\n"
        "torch.load('a', weights_only=False)\n"
        "torch.load('a', **kw)\n"
        "pickle.load(f)\n"
        "pickle.loads(b)\n"
        "np.load('x.npy', allow_pickle=True)\n"
        "trainer.fit(m, weights_only=False)\n"
    )
    assert len(unsafe_loads(bad)) == 7
    assert unsafe_loads("import torch\ntorch.load('a', map_location='cpu', weights_only=True)\n") == []


def test_workspace_never_loads_pickles() -> None:
    files = [p for d in _SCANNED for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts]
    assert len(files) > 50, f"scanned only {len(files)} files under {REPO}"
    problems = [hit for p in files for hit in unsafe_loads(p.read_text(), str(p.relative_to(REPO)))]
    assert not problems, "unsafe deserialisation (use torch.load(..., weights_only=True)):\n" + "\n".join(problems)
