"""The PTB-XL 500 Hz recipe end to end on a generated tiny PTB-XL tree: prepare -> fit (recipe config, shrunk) ->
benchmark (zero-shot on the four tasks + linear probe), with the published numbers laid out beside ours."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from vlp_ecg.cli import benchmark, main, prepare
from vlp_ecg.synth import make_fake_ptbxl


@pytest.mark.slow  # minutes on a shared 2-core machine: runs in the CI slow job
def test_ptbxl_500hz_recipe_end_to_end(tmp_path: Path) -> None:
    root = make_fake_ptbxl(tmp_path / "ptb-xl", 300, rates=(500,), duration=2.5, seed=4)
    store = tmp_path / "ptbxl_store500"
    meta = prepare("ptbxl", str(root), str(store), sampling_rate=500, target_fs=500.0, duration=2.5, labels="all",
                   skip_bad=True, progress=False)  # fmt: skip
    assert meta["n"] == 300 and meta["fs"] == 500.0
    config = files("vlp_ecg") / "configs" / "ptbxl_500hz_base.yaml"
    run = tmp_path / "runs"
    rc = main(["fit", "--config", str(config), "--data.store", str(store), "--data.num_workers", "0",
               "--data.batch_size", "16", "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
               "--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.default_root_dir", str(run),
               "--model.init_args.size", "tiny", "--model.init_args.embed_dim", "16",
               "--model.init_args.token_dim", "16", "--model.init_args.text_max_length", "24",
               "--model.init_args.max_captions", "4"])  # fmt: skip
    assert rc == 0
    (last,) = run.rglob("last.ckpt")
    frame = benchmark(str(last), str(root), sampling_rate=500, duration=2.5, fractions=[0.5, 1.0], seeds=[0],
                      n_boot=20, out=str(tmp_path / "bench"))  # fmt: skip
    ours = frame[frame["source"].str.startswith("this run")]
    assert set(ours["task"]) == {"superclass", "subclass", "form", "rhythm"}
    assert set(ours["evaluation"]) == {"zero-shot", "probe 50%", "probe 100%"}
    assert ours["auroc"].between(0, 100).all()
    table = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "| MELP | probe 100% | 89.44†" in table and "| MERL (ResNet18) | zero-shot | 74.20†" in table
    assert len(pd.read_csv(tmp_path / "bench" / "benchmark.csv")) == len(frame)
