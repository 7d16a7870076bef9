"""Pretrainer routing (several batch fields through one tower), optional terms, and building only what is used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_core.data import collate_batch
from vlp_core.losses import ClipLoss, LocalAlignmentLoss, MultiPositiveClipLoss
from vlp_core.testing import BoringTower
from vlp_core.towers import ImageTower, TextTower
from vlp_core.training import LossTerm, Pretrainer


class CountingTower(BoringTower):
    """BoringTower over bags of characters, counting its calls (one tower object serves several fields)."""

    calls = 0

    def forward(self, texts):  # type: ignore[override]
        CountingTower.calls += 1
        x = torch.zeros(len(texts), 8)
        for i, t in enumerate(texts):
            for ch in t:
                x[i, ord(ch) % 8] += 1.0
        return super().forward(x)


def _routed() -> Pretrainer:
    torch.manual_seed(0)
    return Pretrainer(
        {"image": BoringTower(in_dim=4), "text": CountingTower()},
        [
            LossTerm("clip", ClipLoss(), inputs=("image", "report")),
            LossTerm(
                "aspects",
                MultiPositiveClipLoss(),
                inputs={"a": "image", "b": "aspects", "pos": "batch:aspects_owner"},
                optional=True,
            ),
        ],  # fmt: skip
        inputs={"image": "image", "report": "text", "aspects": "text"},
    )


def _batch(with_aspects: bool = True) -> dict:
    g = torch.Generator().manual_seed(1)
    samples = [{"image": torch.randn(4, generator=g), "report": f"report {i}", "aspects": [f"a{i}", f"b{i}"][: 1 + i % 2]}
               for i in range(4)]  # fmt: skip
    if not with_aspects:
        for s in samples:
            del s["aspects"]
    return collate_batch(samples)


def test_fields_share_one_tower_and_outputs_are_keyed_by_field() -> None:
    model = _routed()
    CountingTower.calls = 0
    out = model(_batch())
    assert set(out) == {"image", "report", "aspects"}
    assert out["report"].embedding.shape == (4, 16) and out["aspects"].embedding.shape == (6, 16)
    assert CountingTower.calls == 2  # one tower, called once per text field
    # Gradients of both text fields reach the same (single) set of text weights.
    model.compute_losses(_batch())["loss"].backward()
    assert all(p.grad is not None for p in model.towers["text"].parameters())


def test_routed_model_round_trips_as_one_tower(tmp_path: Path) -> None:
    model = _routed()
    cfg = model.config()
    assert set(cfg["init_args"]["towers"]) == {"image", "text"}
    assert cfg["init_args"]["inputs"] == {"image": "image", "report": "text", "aspects": "text"}
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert sum(k.startswith("towers.text.") for k in keys) == len(list(model.towers["text"].state_dict()))
    again = Pretrainer.from_pretrained(tmp_path, trust_code=True)  # the test's own tower class is not allow-listed
    b = _batch()
    torch.testing.assert_close(again.compute_losses(b)["loss"], model.compute_losses(b)["loss"])


def test_optional_term_is_skipped_and_logged() -> None:
    model = _routed()
    full = model.compute_losses(_batch())
    assert float(full["aspects/skipped"]) == 0.0 and "aspects" in full
    partial = model.compute_losses(_batch(with_aspects=False))
    assert float(partial["aspects/skipped"]) == 1.0 and "aspects" not in partial
    torch.testing.assert_close(partial["loss"], partial["clip"])


def test_batch_with_no_applicable_term_is_an_error() -> None:
    torch.manual_seed(0)
    model = Pretrainer({"x": BoringTower(), "y": BoringTower()},
                       [LossTerm("clip", ClipLoss(), inputs=("x", "y"), optional=True)])  # fmt: skip
    with pytest.raises(KeyError, match="no loss term applies"):
        model.compute_losses({"x": torch.randn(4, 8)})


def test_unknown_routing_target_is_named() -> None:
    with pytest.raises(KeyError, match="unknown towers"):
        Pretrainer({"x": BoringTower()}, [LossTerm("c", ClipLoss(), inputs=("x", "x"))], inputs={"y": "nope"})


def _image_text(losses) -> Pretrainer:
    torch.manual_seed(0)
    return Pretrainer({"image": ImageTower("resnet10t", embed_dim=16), "text": TextTower(embed_dim=16, freeze=False)},
                      losses)  # fmt: skip


def test_only_heads_some_loss_reads_are_built_and_all_get_gradients() -> None:
    """Plain DDP fails on trainable parameters without gradient: under ClipLoss the image token head is not built
    and the BERT pooler of an unfrozen text tower is dropped, so every trainable parameter gets a gradient."""
    model = _image_text([LossTerm("clip", ClipLoss(), inputs=("image", "text"))])
    assert model.towers["image"].token_proj is None
    batch = {"image": torch.randn(3, 3, 32, 32), "text": ["a red circle", "a blue square", "two green dots"]}
    model.compute_losses(batch)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    # A term that reads image tokens keeps the token head.
    local = LossTerm("local", LocalAlignmentLoss(), inputs=("image.tokens", "image.mask", "text.tokens", "text.mask"))
    with_tokens = _image_text([LossTerm("clip", ClipLoss(), inputs=("image", "text")), local])
    assert with_tokens.towers["image"].token_proj is not None


def test_multi_source_training_skips_terms_of_absent_modalities(tmp_path: Path) -> None:
    """Two sources (image-report pairs with aspects, and pairs without): every batch is single-source, the optional
    term runs only on batches that carry its field, and training runs end to end through Lightning."""
    import lightning as L
    from torch.utils.data import Dataset

    from vlp_core.training import PairedDataModule

    class Source(Dataset):
        def __init__(self, aspects: bool, n: int = 16) -> None:
            self.aspects, self.n = aspects, n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            item = {"image": torch.full((4,), float(i)), "report": f"report {i}"}
            if self.aspects:
                item["aspects"] = [f"aspect {i}", f"detail {i % 3}"]
            return item

    seen: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(1.0 if "aspects" in batch else 0.0)

    model = _routed()
    data = PairedDataModule(batch_size=4, train_set=[Source(True), Source(False)], seed=0)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, data)
    assert seen == [1.0, 0.0] * 4  # round robin over the two sources
