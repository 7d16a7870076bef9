from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vlp_core.registry import PluginRegistry, Registry
from vlp_core.training import Pretrainer
from vlp_ecg.datasets import ECGStore, ECGTextDataset, LoadConfig, collate_ecg, prepare_store, ptbxl_index
from vlp_ecg.eval import probe_from_features, zeroshot_evaluate
from vlp_ecg.models import MELP, ECGTower, ReportTower, load_model
from vlp_ecg.synth import make_fake_ptbxl


@pytest.fixture(scope="module")
def tiny_model() -> MELP:
    torch.manual_seed(0)
    return MELP(size="tiny", embed_dim=32, token_dim=32, text_max_length=32, decoder_layers=1, max_captions=8)


@pytest.mark.parametrize("encoder", ["resnet1d", "vit1d"])
@pytest.mark.parametrize("beats", ["rpeak", "queries"])
def test_ecg_tower_shapes(encoder: str, beats: str) -> None:
    tower = ECGTower(encoder, "tiny", fs=100.0, embed_dim=24, token_dim=16, beats=beats, n_beat_queries=5)
    x = torch.randn(3, 12, 1000)
    rpeaks = torch.tensor([[50, 150, 250, -1], [40, -1, -1, -1], [10, 20, 990, 999]])
    out = tower({"signal": x, "rpeaks": rpeaks})
    n_tok = 63 if encoder == "resnet1d" else 100
    assert out.embedding.shape == (3, 24) and out.tokens.shape == (3, n_tok, 16)
    nb = 4 if beats == "rpeak" else 5
    assert out.extras["beats"].shape == (3, nb, 24) and out.extras["beat_mask"].shape == (3, nb)
    if beats == "rpeak":
        assert out.extras["beat_mask"].sum(1).tolist() == [3, 1, 4]
        # Without R peaks in the input, the tower detects them itself.
        auto = tower(x)
        assert auto.extras["beats"].shape[0] == 3
    with pytest.raises(ValueError, match=r"expects \[B, 12, T\]"):
        tower(torch.randn(2, 11, 1000))


def test_report_tower_sentences(tiny_model: MELP) -> None:
    text: ReportTower = tiny_model.towers["text"]  # type: ignore[assignment]
    out = text(["sinus rhythm. left bundle branch block.", "atrial fibrillation"])
    assert out.extras["sentences"].shape == (2, 2, 32)
    assert out.extras["sentence_mask"].tolist() == [[True, True], [True, False]]
    single = text(["left bundle branch block"]).embedding
    torch.testing.assert_close(out.extras["sentences"][0, 1], single[0], rtol=1e-4, atol=1e-5)


def test_save_pretrained_round_trip(tiny_model: MELP, tmp_path: Path) -> None:
    tiny_model.eval()
    tiny_model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(str(tmp_path / "ckpt"))
    assert type(loaded) is Pretrainer and [t.name for t in loaded.losses] == ["rhythm", "token", "beat"]
    loaded.eval()
    x = torch.randn(2, 12, 1000)
    torch.testing.assert_close(loaded.towers["ecg"](x).embedding, tiny_model.towers["ecg"](x).embedding)


def test_probe_labels_aligned_by_name() -> None:
    rng = np.random.default_rng(0)
    classes = ["AVB", "RAO/RAE", "ISC", "NORM"]

    def split(n: int, order: list[str]) -> tuple[torch.Tensor, pd.DataFrame]:
        y = (rng.random((n, 4)) < 0.3).astype(np.float32)
        feats = torch.tensor(y * 2.0 + 0.3 * rng.normal(size=y.shape), dtype=torch.float32)  # features = labels
        frame = pd.DataFrame(y, columns=classes)[order]  # same labels, columns in another order
        return feats, frame

    tr, va, te = split(300, classes), split(100, ["ISC", "AVB", "NORM", "RAO/RAE"]), split(100, classes[::-1])
    table = probe_from_features([tr[0], va[0], te[0]], [tr[1], va[1], te[1]], fractions=(1.0,), seeds=(0,))
    assert float(table["mean"].iloc[0]) > 0.95
    # A positional reading of the test frame (the MERL/MELP bug) is what this guards against: it scores ~chance.
    scrambled = te[1].copy()
    scrambled.columns = classes  # relabel columns by position
    bad = probe_from_features([tr[0], va[0], te[0]], [tr[1], va[1], scrambled], fractions=(1.0,), seeds=(0,))
    assert float(bad["mean"].iloc[0]) < 0.75


def test_tiny_fit_then_zero_shot_above_chance(tmp_path: Path) -> None:
    import lightning as L

    from vlp_ecg.datasets import ECGDataModule

    root = make_fake_ptbxl(tmp_path / "ptbxl", 400, seed=1)
    prepare_store(ptbxl_index(root, labels="all"), tmp_path / "store", LoadConfig(target_fs=100.0), progress=False)
    L.seed_everything(0, verbose=False)
    dm = ECGDataModule(store=str(tmp_path / "store"), batch_size=32, seed=0)
    model = MELP(size="tiny", embed_dim=64, token_dim=32, text_max_length=40, decoder_layers=1, max_captions=8,
                 lr=3e-3, warmup_steps=5)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", max_epochs=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    test = ECGTextDataset(ECGStore(tmp_path / "store"), "test")
    val = ECGTextDataset(ECGStore(tmp_path / "store"), "val")
    assert set(test.frame["key"]).isdisjoint(dm.train_set.frame["key"])
    classes = ["AFIB", "CLBBB", "PVC", "STE_"]
    res_test = zeroshot_evaluate(model, test, classes, n_boot=0)
    res_val = zeroshot_evaluate(model, val, classes, n_boot=0)
    mean_auc = (res_test["macro_auroc"] + res_val["macro_auroc"]) / 2
    print(f"tiny fit zero-shot AUROC test={res_test['macro_auroc']:.3f} val={res_val['macro_auroc']:.3f}")
    assert mean_auc > 0.65, (res_test["per_class"], res_val["per_class"])
    batch = collate_ecg([test[i] for i in range(4)])
    assert torch.isfinite(model.compute_losses(batch)["loss"])


def test_plugin_registers_resolvable_entries() -> None:
    from vlp_ecg.plugin import register

    reg = PluginRegistry(Registry("tower"), Registry("loss"), Registry("dataset"), Registry("transform"),
                         Registry("demo"), Registry("model"))  # fmt: skip
    register(reg)
    assert reg.towers.list("ecg/*") == ["ecg/report_text", "ecg/resnet1d", "ecg/vit1d"]  # a model is not a tower
    assert reg.models.list() == ["ecg/melp"]
    assert "ecg" in reg.demos and "ecg/ptbxl" in reg.datasets
    for r in (reg.towers, reg.losses, reg.datasets, reg.transforms, reg.demos, reg.models):
        for name in r.list():
            assert callable(r.get(name))
    tower = reg.towers.build("ecg/vit1d", size="tiny", embed_dim=8, token_dim=8, beats="none")
    assert tower(torch.randn(1, 12, 500)).embedding.shape == (1, 8)
