"""`vlp demo ct3d` end to end (slow: run with -m slow).

What this guards. The issue's targets are zero-shot macro AUROC >= 0.85 (class-name prompts) and >= 0.80 (disjoint
prompts), both controls <= 0.60, VAE PSNR >= 20 dB, and factual correctness of generated volumes above chance; all
are asserted. Measured on a 2-core CPU with AMX (`VLP_CACHE=<empty> uv run vlp demo ct3d`, seed 0, the demo's recipe
since the tenth round: MLP text head on MiniLM embeddings with training noise 2x their std, pyramid pooling, volume
tower widths 8-32-64, 1200 steps, bf16 mixed precision where the CPU has native bf16; 2026-12-05, 323.6 s): zero-shot
0.863 / 0.804, controls 0.533 / 0.335, linear probe 0.874, VAE PSNR 23.2 dB, factual correctness 0.685 on generated
vs 0.905 on real volumes. The disjoint margin is thin (0.0045): the numbers are deterministic on one machine but move
by ~0.01 between CPU types and between the bf16 and fp32 paths (the ninth round's fp32 recipe gave 0.852 / 0.813).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_meets_zero_shot_targets_controls_psnr_and_factual_correctness(tmp_path: Path) -> None:
    from vlp_core.demo import DemoContext
    from vlp_ct3d.demo import run_demo

    res = run_demo(DemoContext(tmp_path / "out", tmp_path / "data", scale="small", seed=0, progress=False))
    m = res.metrics
    # Targets met.
    assert m["control random tower AUROC"] <= 0.60 and m["control shuffled pairs AUROC"] <= 0.60, m
    assert m["VAE PSNR (dB)"] >= 20.0, m
    assert m["factual correctness generated AUROC"] >= 0.58, m  # above chance (0.5) with margin
    assert m["zero-shot macro AUROC"] >= 0.85, m
    assert m["zero-shot macro AUROC (disjoint prompts)"] >= 0.80, m
    # Learned, not wired: clearly above both controls; the linear probe well above chance.
    controls = max(m["control random tower AUROC"], m["control shuffled pairs AUROC"])
    assert min(m["zero-shot macro AUROC"], m["zero-shot macro AUROC (disjoint prompts)"]) >= controls + 0.15, m
    assert m["linear probe AUROC"] >= 0.84, m
    assert m["factual correctness real AUROC"] >= 0.70, m
    assert all(Path(f).is_file() for f in res.figures)
    for name in ("zeroshot.csv", "retrieval.csv", "metrics.json"):
        assert (tmp_path / "out" / name).is_file()
    # The alignment diagnostic: three 6 x 6 matrices; the findings zero-shot gets right (pleural effusion 0.90,
    # emphysema 0.84 measured) have report and volume directions aligned.
    import json

    align = json.loads((tmp_path / "out" / "alignment.json").read_text())
    classes = align["classes"]
    for key in ("prompt vs report", "report vs volume", "prompt vs volume"):
        assert len(align[key]) == len(classes) == 6 and all(len(row) == 6 for row in align[key])
    rv = align["report vs volume"]
    for c in ("Pleural effusion", "Emphysema"):
        assert rv[classes.index(c)][classes.index(c)] >= 0.5, rv
    # The text-side diagnostic: the class-name prompts read the training reports' own text well above chance
    # (0.768 with MiniLM alone measured) and the disjoint wording less well (0.580); in the trained joint space both
    # read them far better (0.840 / 0.787 measured: the embedding noise keeps the head on shared directions).
    side = json.loads((tmp_path / "out" / "text_side.json").read_text())
    assert side["class-name pairs"]["encoder"]["macro_auroc"] >= 0.7
    assert side["class-name pairs"]["encoder"]["macro_auroc"] > side["disjoint wording"]["encoder"]["macro_auroc"]
    assert set(side["disjoint wording"]["joint space"]["per_class"]) == set(classes)
    assert (
        side["disjoint wording"]["joint space"]["macro_auroc"]
        >= side["disjoint wording"]["encoder"]["macro_auroc"] + 0.1
    )
