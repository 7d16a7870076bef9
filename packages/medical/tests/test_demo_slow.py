"""End-to-end demo (slow): phantoms -> CLIP/MAKE/ProbMed pretraining -> bench table.

What this guards, and what it does not. The issue's targets: best-variant zero-shot macro AUROC >= 0.85 with
class-name prompts and >= 0.80 with the disjoint prompt set, both controls <= 0.60, and ProbMed's uncertainty
correlating with retrieval errors. Measured (`uv run vlp demo medical`, seed 0, four runs on 2 cores, 2026-12-05):
best class names 0.870-0.889 (ProbMed with the sentence term), best disjoint (validation-chosen wording)
0.813-0.857, controls 0.49-0.53, linear probe 0.97 — the two zero-shot targets and the controls are met; the same
seed gives results ~0.02 apart from run to run (package README), so the test asserts them with a margin. ProbMed's
uncertainty-vs-wrong-top-1 AUROC is 0.43-0.49 on test (0.60-0.68 on validation): MISSED, only checked to be finite.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_meets_controls_and_keeps_its_level(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext
    from vlp_medical.demo import run_demo

    res = run_demo(DemoContext(tmp_path / "out", tmp_path / "data", scale="small", seed=0, progress=False))
    m = res.metrics
    for control in ("control: random image tower", "control: shuffled pairs (CLIP)"):  # target met
        assert m[f"{control}: zero-shot AUROC class names"] <= 0.60, m
        assert m[f"{control}: zero-shot AUROC disjoint"] <= 0.60, m
    # Targets 0.85 / 0.80, measured 0.870-0.889 / 0.813-0.857 over four runs (run-to-run spread ~0.02, see the
    # module docstring): asserted with a margin below the target so that noise cannot turn CI red, far above the
    # 0.75 / 0.65 this release started from, so that a regression (sentence term, chosen wording) fails here.
    assert m["zero-shot macro AUROC (best variant, class names)"] >= 0.83, m
    assert m["zero-shot macro AUROC (best variant, disjoint prompts)"] >= 0.77, m
    # The wording chosen on validation beats the first draft for the variant that is best on it.
    assert m["zero-shot macro AUROC (best variant, disjoint prompts)"] > m[
        "zero-shot macro AUROC (best variant, disjoint first draft)"
    ], m
    for variant in ("CLIP", "MAKE", "ProbMed"):
        assert m[f"{variant}: zero-shot AUROC class names"] >= 0.68, (variant, m)
        assert m[f"{variant}: linear probe 100% AUROC"] >= 0.92, (variant, m)
    assert not math.isnan(m["ProbMed: uncertainty AUROC for wrong top-1 retrieval"])
    assert (tmp_path / "out" / "bench.csv").is_file() and (tmp_path / "out" / "bench_auroc.png").is_file()
