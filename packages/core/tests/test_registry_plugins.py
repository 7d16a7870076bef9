"""Registry semantics and entry-point plug-in discovery."""

from __future__ import annotations

import pytest

from vlp_core.registry import PluginRegistry, Registry, resolve_lazy


def test_registry_register_get_list_and_clash() -> None:
    reg = Registry("tower")
    reg.register("core/a", lambda **kw: ("a", kw))

    @reg.register("ecg/b")
    def b(**kw):
        return "b"

    reg.register("ecg/lazy", "vlp_core.towers:TextTower")
    assert reg.list() == ["core/a", "ecg/b", "ecg/lazy"] and reg.list("ecg/*") == ["ecg/b", "ecg/lazy"]
    assert reg.build("core/a", x=1) == ("a", {"x": 1})
    from vlp_core.towers import TextTower

    assert reg.get("ecg/lazy") is TextTower
    with pytest.raises(ValueError, match="already registered"):
        reg.register("ecg/b", lambda: None)
    with pytest.raises(KeyError, match=r"unknown tower 'b' \(did you mean 'ecg/b'\?\)"):
        reg.get("b")
    with pytest.raises(ValueError, match="module:attr|package.module:attribute"):
        resolve_lazy("no_colon")
    with pytest.raises(AttributeError, match="has no"):
        resolve_lazy("vlp_core.towers:Missing")


def test_installed_plugins_are_discovered_with_versions() -> None:
    from vlp_core.plugins import load_plugins

    plugins = {p.name: p for p in load_plugins(["core"])}
    assert plugins["core"].distribution == "vlp-core" and plugins["core"].version
    from vlp_core import registry

    assert "core/clip" in registry.LOSSES and "core" in registry.DEMOS


def test_vlp_plugins_env_allow_list_and_isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlp_core import plugins

    fresh = PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo")))
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_FAILED", {})
    monkeypatch.setenv("VLP_PLUGINS", "none-such")
    loaded = plugins.load_plugins(registry=fresh)
    assert [p.name for p in loaded] == ["core"]  # core is always loaded, others only when allowed
    assert fresh.towers.list() == ["core/image", "core/text"]


def test_vlp_plugins_command_lists_core(capsys: pytest.CaptureFixture[str]) -> None:
    from vlp_core.cli import main

    main(["plugins"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["plug-in", "distribution", "version"]
    assert any(line.split()[:2] == ["core", "vlp-core"] for line in out.splitlines())
    header = out.splitlines()[0].split()
    assert header[3:] == ["models", "towers", "losses", "datasets", "transforms", "demo"]


def test_vlp_list_shows_registered_names_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    from vlp_core.cli import main

    assert main(["list", "loss", "core/*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ["loss", "core/clip", "vlp_core.losses.ClipLoss"] in [line.split() for line in lines]
    assert all(line.split()[0] == "loss" and line.split()[1].startswith("core/") for line in lines)
    assert main(["list", "tower", "nothing/*"]) == 1


def test_create_builds_by_registered_name() -> None:
    from vlp_core.losses import ClipLoss
    from vlp_core.registry import MODELS, create

    assert isinstance(create("loss", "core/clip"), ClipLoss)
    assert isinstance(create("losses", "core/clip"), ClipLoss)  # plural kinds read naturally too
    assert MODELS.kind == "model"
    with pytest.raises(KeyError, match="unknown registry kind"):
        create("widget", "core/clip")
    with pytest.raises(KeyError, match="unknown loss 'core/none'"):
        create("loss", "core/none")
