from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pandas as pd

from vlp_ecg.cli import main, plot, prepare, probe, zeroshot

from .conftest import sample_record


def test_prepare_fit_yaml_then_zeroshot(fake_ptbxl: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    meta = prepare("ptbxl", str(fake_ptbxl), str(store), labels="all", progress=False)
    assert meta["n"] == 200 and (store / "signals.npy").is_file()
    config = files("vlp_ecg") / "configs" / "tiny_synthetic.yaml"
    rc = main(["fit", "--config", str(config), "--data.store", str(store), "--trainer.max_steps", "3",
               "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_checkpointing", "true"])  # fmt: skip
    assert rc == 0
    ckpts = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    assert main(["zeroshot", "--ckpt", str(ckpts[-1]), "--store", str(store), "--classes", "[AFIB, CLBBB]",
                 "--n_boot", "50", "--out", str(tmp_path / "zs")]) == 0  # fmt: skip
    res = zeroshot(str(ckpts[-1]), store=str(store), classes=["AFIB", "CLBBB"], n_boot=50, out=str(tmp_path / "zs2"))
    table = pd.read_csv(tmp_path / "zs" / "zeroshot.csv")
    assert table["class"].tolist() == ["AFIB", "CLBBB", "macro"]
    saved = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert abs(saved["macro_auroc"] - res["macro_auroc"]) < 1e-12 and 0.0 <= res["macro_auroc"] <= 1.0
    table = probe(str(ckpts[-1]), store=str(store), fractions=[0.5, 1.0], seeds=[0], out=str(tmp_path / "probe"))
    written = pd.read_csv(tmp_path / "probe" / "probe.csv")
    assert written["fraction"].tolist() == [0.5, 1.0] and table["n_train"].tolist() == [80, 160]
    assert ((written["mean"] >= 0) & (written["mean"] <= 1)).all()


def test_plot_real_record(tmp_path: Path) -> None:
    path = sample_record("ptbdb", "s0010_re")
    out = plot(path, str(tmp_path / "s0010.png"))
    data = Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_help_lists_commands(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for cmd in ("fit", "prepare", "zeroshot", "probe", "plot", "demo"):
        assert cmd in text
