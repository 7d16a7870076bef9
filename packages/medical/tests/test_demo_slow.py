"""End-to-end demo (slow): phantoms -> CLIP/MAKE/ProbMed pretraining -> bench table; asserts the demo's targets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_meets_targets(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext
    from vlp_medical.demo import run_demo

    res = run_demo(DemoContext(tmp_path / "out", tmp_path / "data", scale="small", seed=0, progress=False))
    m = res.metrics
    assert m["zero-shot macro AUROC (best variant, class names)"] >= 0.85
    assert m["zero-shot macro AUROC (best variant, disjoint prompts)"] >= 0.80
    for control in ("control: random image tower", "control: shuffled pairs (CLIP)"):
        assert m[f"{control}: zero-shot AUROC class names"] <= 0.60
    assert not math.isnan(m["ProbMed: uncertainty AUROC for wrong top-1 retrieval"])
    assert (tmp_path / "out" / "bench.csv").is_file() and (tmp_path / "out" / "bench_auroc.png").is_file()
