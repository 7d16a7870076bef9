"""`vlp-surgical fit --config <shipped example>.yaml` trains, and `zeroshot` on its checkpoint writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vlp_surgical.cli import main
from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures

CONFIG = Path(__file__).resolve().parents[1] / "src" / "vlp_surgical" / "configs" / "peskavlp_synthetic.yaml"


def test_fit_with_the_shipped_config_then_zeroshot(tmp_path: Path) -> None:
    root = make_procedures(tmp_path / "data", n_train=3, n_val=1, n_test=2, size=32, phase_seconds=(2.0, 3.0),
                           silent_fraction=0.3)  # fmt: skip
    out = tmp_path / "fit"
    # The README's command, shrunk: the example config with a small corpus, model and step count.
    assert main(["fit", "--config", str(CONFIG), "--root", str(root), "--out", str(out), "--steps", "3",
                 "--videos_per_batch", "2", "--img_size", "16", "--frame_dim", "16", "--embed_dim", "16",
                 "--retrieval_weight", "0.5"]) == 0  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 3 and all(h["loss"] == h["loss"] for h in history)  # finite (not NaN)
    assert {"clip", "dtw_video", "ssl", "clip_retrieval"} <= set(history[-1])  # the config's terms are all on
    model = HecVL.from_pretrained(str(out))
    assert model.config["embed_dim"] == 16 and model.config["img_size"] == 16

    res = tmp_path / "zs"
    assert main(["zeroshot", "--ckpt", str(out), "--root", str(root), "--dataset", "cholec80", "--split", "test",
                 "--source", "frames", "--out", str(res)]) == 0  # fmt: skip
    for name in ("zeroshot.csv", "zeroshot.json", "retrieval.csv", "timeline.png"):
        assert (res / name).is_file(), name
    table = pd.read_csv(res / "zeroshot.csv")
    assert table["acc_video"].between(0, 1).all() and len(table) >= 1
