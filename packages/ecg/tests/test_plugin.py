"""vlp-ecg's plug-in follows core's conformance rules (register-only, namespaced, versioned, CLI help)."""

from __future__ import annotations

from vlp_core.testing import PluginConformance


class TestPluginConformance(PluginConformance):
    domain = "ecg"


def test_transform_names_equal_build_transforms_names() -> None:
    from vlp_core.registry import PluginRegistry, Registry, create
    from vlp_ecg import plugin, transforms

    fresh = PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo", "model")))
    plugin.register(fresh)
    registered = {n.removeprefix("ecg/"): fresh.transforms.get(n) for n in fresh.transforms.list()}
    assert registered == transforms._BUILDERS  # same names, same classes
    required = {"resample": {"target_fs": 100.0}, "crop_pad": {"duration": 5.0}, "random_crop": {"duration": 5.0}}
    for name in registered:  # every registered name is accepted by the YAML transform spec, and builds alike
        (built,) = transforms.build_transforms([{"name": name, **required.get(name, {})}]).transforms
        assert type(built) is registered[name]
        assert type(create("transform", f"ecg/{name}", **required.get(name, {}))) is registered[name]


def test_whole_model_is_built_by_registered_name() -> None:
    from vlp_core.registry import TOWERS, create
    from vlp_ecg.models import MELP, ECGTower

    model = create("model", "ecg/melp", size="tiny", embed_dim=16, token_dim=16, weights={"token": 0, "beat": 0})
    assert isinstance(model, MELP) and [t.name for t in model.losses] == ["rhythm"]
    assert "ecg/melp" not in TOWERS  # a model is not a tower
    tower = create("tower", "ecg/vit1d", size="tiny", embed_dim=8, beats="none")
    assert isinstance(tower, ECGTower) and tower.output_dim == 8
