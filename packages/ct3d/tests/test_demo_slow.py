"""The embedded demo meets its targets (slow: run with -m slow)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_targets(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext
    from vlp_ct3d.demo import run_demo

    res = run_demo(DemoContext(tmp_path / "out", tmp_path / "data", scale="small", seed=0, progress=False))
    m = res.metrics
    assert m["zero-shot macro AUROC"] >= 0.85
    assert m["zero-shot macro AUROC (disjoint prompts)"] >= 0.80
    assert m["control random tower AUROC"] <= 0.60 and m["control shuffled pairs AUROC"] <= 0.60
    assert m["VAE PSNR (dB)"] >= 20.0
    assert m["factual correctness real AUROC"] >= 0.85 and m["factual correctness generated AUROC"] > 0.5
    assert all(Path(f).is_file() for f in res.figures)
