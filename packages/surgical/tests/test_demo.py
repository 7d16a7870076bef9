"""End-to-end: `vlp demo surgical` meets its target (slow; run with -m slow)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_meets_targets(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext
    from vlp_surgical.demo import run_demo

    ctx = DemoContext(tmp_path / "out", tmp_path / "data", scale="small", seed=0, progress=False)
    ctx.out_dir.mkdir(parents=True)
    res = run_demo(ctx)
    chance = 1 / 7
    assert res.passed, res.metrics
    assert res.metrics["zeroshot_acc"] >= 3 * chance
    # Controls stay near chance: a random video tower and shuffled-pair pretraining carry no phase semantics.
    table = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in res.notes if line.startswith("| ")
             and not line.startswith("| row") and "---" not in line}  # fmt: skip
    # The DTW term's gain over clip-level InfoNCE alone (mean of 3 seeds each; +5.8 points when measured).
    assert res.metrics["clip_dtw_gain_acc"] > 0, res.metrics
    assert table["control: random video tower"] < 2 * chance
    assert table["control: shuffled-pair pretraining"] < 2 * chance
    assert (ctx.out_dir / "timeline.png").is_file() and (ctx.out_dir / "zeroshot.csv").is_file()
