"""The three methods build, train a step, round-trip through save_pretrained; N-modality binding via the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_core.registry import PluginRegistry, Registry
from vlp_core.testing import BoringTower
from vlp_medical.models import MedicalPretrainer, build_binding_model, build_model
from vlp_medical.prob import HellingerSimilarity, ProbabilisticTower

TINY = {"img_size": 32, "patch_size": 8, "depth": 1}


def _batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    texts = [f"FINDINGS: report number {i} with effusion." for i in range(n)]
    return {
        "image": torch.randn(n, 1, 32, 32, generator=g),
        "text": texts,
        "aspects": ["pleural effusion, fluid", "blunted angle", "normal heart", "left lower hemithorax", "x"],
        "aspects_owner": torch.tensor([0, 0, 1, 1, 3]),
        "aspects_kind": torch.tensor([1, 2, 2, 2, 2]),
    }


@pytest.mark.parametrize("method", ["clip", "make", "probmed", "pcmepp"])
def test_method_step_and_round_trip(method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(method, embed_dim=16, image_tower=TINY, text_max_length=16)
    logs = model.compute_losses(_batch())
    assert torch.isfinite(logs["loss"])
    logs["loss"].backward()
    img = model.towers["image"]
    img = getattr(img, "tower", img)
    assert img.backbone.patch_embed.proj.weight.grad is not None and img.proj.net.weight.grad is not None
    if method == "clip":  # core builds no token head when no loss reads tokens
        assert img.token_proj is None
    elif method == "make":  # MAKE's fine-grained term trains the patch-token head
        assert img.token_proj.net.weight.grad is not None
    model.eval()
    model.save_pretrained(tmp_path / method)
    back = MedicalPretrainer.from_pretrained(tmp_path / method)
    assert type(back.similarity) is type(model.similarity) and back.inputs == model.inputs
    x = _batch()["image"]
    torch.testing.assert_close(back.encode_image(x), model.encode_image(x))
    if method in ("probmed", "pcmepp"):
        assert isinstance(back.towers["image"], ProbabilisticTower) and isinstance(back.similarity, HellingerSimilarity)
        assert back.encode_image(x).shape == (4, 32)  # [mu, logvar]


@pytest.mark.parametrize("method", ["clip", "make"])
def test_cnn_image_tower_trains_and_round_trips(method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(method, embed_dim=16, image_tower={"arch": "resnet10t", "img_size": 32}, text_max_length=16)
    img = model.towers["image"]
    assert img.backbone.default_cfg["architecture"] == "resnet10t" and img.backbone.conv1[0].in_channels == 1
    logs = model.compute_losses(_batch())
    logs["loss"].backward()
    assert img.proj.net.weight.grad is not None
    if method == "make":  # tokens are the final feature-map positions ([B, 1, 1] at 32 px) and get gradient
        assert img.token_proj.net.weight.grad is not None
    model.eval()
    model.save_pretrained(tmp_path / method)
    back = MedicalPretrainer.from_pretrained(tmp_path / method)
    x = _batch()["image"]
    torch.testing.assert_close(back.encode_image(x), model.encode_image(x))
    with pytest.raises(ValueError, match="apply to the ViT only"):
        build_model("clip", embed_dim=16, image_tower={"arch": "resnet10t", "patch_size": 8})


def test_make_batch_without_aspects_still_trains() -> None:
    model = build_model("make", embed_dim=16, image_tower=TINY, text_max_length=16)
    b = _batch()
    b.update(aspects=[], aspects_owner=torch.zeros(0, dtype=torch.long), aspects_kind=torch.zeros(0, dtype=torch.long))
    assert torch.isfinite(model.compute_losses(b)["loss"])
    assert model(b)["aspects"].embedding.shape == (0, 16)


def test_binding_with_a_standin_tower_from_the_registry() -> None:
    reg = PluginRegistry(*(Registry(k) for k in ("tower", "loss", "dataset", "transform", "demo")))
    from vlp_medical.plugin import register

    register(reg)
    reg.towers.register("test/standin", BoringTower)  # e.g. an ECG tower from another domain package
    model = build_binding_model(
        {"cxr": ("medical/cxr_vit_tiny", {"embed_dim": 8, "img_size": 32}), "sig": ("test/standin", {"in_dim": 5, "embed_dim": 8})},
        registry=reg, pairs_per_step=1, seed=0,
    )  # fmt: skip
    logs = model.compute_losses({"cxr": torch.randn(4, 1, 32, 32), "sig": torch.randn(4, 5)})
    logs["loss"].backward()
    assert model.losses[0].loss.last_pairs == [("cxr", "sig")]
    assert (
        model.towers["cxr"].tower.proj.net.weight.grad is not None
        and model.towers["sig"].tower.net[0].weight.grad is not None
    )
    three = build_binding_model(
        {m: ("test/standin", {"in_dim": 5, "embed_dim": 8}) for m in ("a", "b", "c")}, registry=reg
    )
    bind = three.losses[0].loss
    batch = {m: torch.randn(4, 5) for m in "abc"}
    seen = set()
    for _ in range(12):
        assert torch.isfinite(three.compute_losses(batch)["loss"]) and len(bind.last_pairs) == 1
        seen.add(bind.last_pairs[0])
    assert seen == {("a", "b"), ("a", "c"), ("b", "c")}  # every pair gets sampled
    three.zero_grad()
    three.compute_losses({"a": batch["a"], "c": batch["c"]})["loss"].backward()  # a dataset with two modalities
    assert bind.last_pairs == [("a", "c")] and three.towers["b"].tower.net[0].weight.grad is None
    # Pair sampling is deterministic in (seed, call index).
    again = build_binding_model(
        {"a": ("test/standin", {}), "b": ("test/standin", {}), "c": ("test/standin", {})}, registry=reg
    )
    pairs = []
    for _ in range(5):
        again.compute_losses({k: torch.randn(3, 8) for k in "abc"})
        pairs.append(again.losses[0].loss.last_pairs[0])
    again2 = build_binding_model(
        {"a": ("test/standin", {}), "b": ("test/standin", {}), "c": ("test/standin", {})}, registry=reg
    )
    pairs2 = []
    for _ in range(5):
        again2.compute_losses({k: torch.randn(3, 8) for k in "abc"})
        pairs2.append(again2.losses[0].loss.last_pairs[0])
    assert pairs == pairs2


def test_make_routes_aspects_through_core_inputs_and_loads_pre_routing_checkpoints(tmp_path: Path) -> None:
    import json

    torch.manual_seed(0)
    model = build_model("make", embed_dim=16, image_tower=TINY, text_max_length=16)
    assert model.inputs == {"image": "image", "text": "text", "aspects": "text"} and model.text_fields == ("aspects",)
    batch = _batch()
    out = model(batch)
    # One text tower for reports and aspects: the same text gives the same embedding under either field.
    solo = model.towers["text"](batch["aspects"]).embedding
    torch.testing.assert_close(out["aspects"].embedding, solo)
    assert out["aspects"].embedding.shape == (5, 16)
    model.eval()
    model.save_pretrained(tmp_path / "new")
    back = MedicalPretrainer.from_pretrained(tmp_path / "new")
    assert back.inputs == model.inputs
    # A checkpoint written before core routing: ``text_fields`` in the config, no ``inputs``.
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    cfg["init_args"].pop("inputs")
    cfg["init_args"]["text_fields"] = ["aspects"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(cfg))
    for f in (tmp_path / "new").iterdir():
        if f.name != "config.json":
            (old / f.name).write_bytes(f.read_bytes())
    legacy = MedicalPretrainer.from_pretrained(old)
    assert legacy.inputs == model.inputs
    with torch.no_grad():
        a, b = legacy(batch), model(batch)
    for field in ("image", "text", "aspects"):
        torch.testing.assert_close(a[field].embedding, b[field].embedding)
    torch.testing.assert_close(legacy.compute_losses(batch)["loss"], model.compute_losses(batch)["loss"])
    # CLIP routes no aspects: a batch carrying them does not run the text tower on them.
    clip = build_model("clip", embed_dim=16, image_tower=TINY, text_max_length=16)
    assert "aspects" not in clip(batch) and clip.text_fields == ()


@pytest.mark.parametrize("method", ["clip", "probmed"])
def test_sentence_term_reads_report_sentences_with_shared_ids(method: str, tmp_path: Path) -> None:
    from vlp_medical.datasets import collate_cxr, report_sentences

    rows = [{"text": "FINDINGS: No pneumothorax. Small left effusion. IMPRESSION: Effusion."},
            {"text": "FINDINGS: No pneumothorax. Heart size is normal. IMPRESSION: Normal chest."}]  # fmt: skip
    samples = [{"image": torch.zeros(1, 32, 32), "labels": torch.zeros(2), "index": i, "text": r["text"],
                "aspects": report_sentences(r)} for i, r in enumerate(rows)]  # fmt: skip
    batch = collate_cxr(samples)
    assert batch["aspects"][:2] == ["No pneumothorax", "Small left effusion"]
    ids, owner = batch["aspects_ids"], batch["aspects_owner"]
    assert owner.tolist() == [0, 0, 0, 1, 1, 1] and ids[0] == ids[3] and len(set(ids.tolist())) == 5
    torch.manual_seed(0)
    model = build_model(method, embed_dim=16, image_tower=TINY, text_max_length=16, sentence_weight=0.5)
    assert model.inputs["aspects"] == "text"
    logs = model.compute_losses({**batch, "image": torch.randn(2, 1, 32, 32)})
    assert torch.isfinite(logs["sentences"]) and logs["sentences"] > 0  # the term ran
    assert torch.isfinite(logs["loss"])
    model.save_pretrained(tmp_path / method)
    back = MedicalPretrainer.from_pretrained(tmp_path / method)
    assert [t.name for t in back.losses] == [t.name for t in model.losses]
    with pytest.raises(ValueError, match="sentence_weight"):
        build_model("make", embed_dim=16, image_tower=TINY, sentence_weight=1.0)


def test_attenuation_with_label_partners_reads_the_batch_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kw = {"embed_dim": 16, "image_tower": TINY, "text_max_length": 16, "attenuation_weight": 1.0}
    model = build_model("probmed", attenuation_partners="labels", **kw)
    batch = _batch()
    same = {**batch, "labels": torch.zeros(4, 3)}  # every item a plausible match of every other
    own = {**batch, "labels": torch.eye(4, 3)[[0, 1, 2, 3]] + torch.arange(4)[:, None]}  # all label vectors differ
    model.eval()
    with torch.no_grad():
        loose, strict = model.compute_losses(same)["attenuation"], model.compute_losses(own)["attenuation"]
        pair = build_model("probmed", **kw)
        pair.load_state_dict(model.state_dict())
        torch.testing.assert_close(pair.eval().compute_losses(batch)["attenuation"], strict)  # distinct = exact pair
    assert not torch.allclose(loose, strict)
    model.save_pretrained(tmp_path / "m")
    back = MedicalPretrainer.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back.eval().compute_losses(same)["attenuation"], loose)
    with pytest.raises(ValueError, match="attenuation_partners"):
        build_model("probmed", attenuation_partners="report", **kw)
