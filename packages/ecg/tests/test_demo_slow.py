"""End to end: `vlp demo ecg` as a user runs it, asserting the targets the demo meets (CI: `pytest -m slow`).

Asserted: clinical-prompt zero-shot macro AUROC >= 0.90 (the demo's headline target; measured 0.983), both controls
(random ECG encoder as the mean of 5 inits, shuffled-pair pretraining) <= 0.60 with both prompt sets, and the
one-table report with every row. The descriptive-prompt targets (>= 0.85 macro, no class < 0.70) are MISSED
(measured 0.662, AFIB 0.374; see the package README): the demo reports them as MISSED lines, and this test checks
that those lines are there rather than asserting targets the demo does not meet.

The demo's schedule is a fixed number of steps; its ``time_limit_s`` is only a safety stop that cuts the schedule
short on a much slower machine (a shared CI runner), which would make this test fail for the machine's sake. The
test therefore raises that stop to 1,500 s: the asserted numbers then depend on the fixed schedule only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ecg_demo_meets_its_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlp_core.cli import main
    from vlp_ecg import demo

    monkeypatch.setitem(demo.DEMO_SCALES, "small", {**demo.DEMO_SCALES["small"], "time_limit_s": 1500.0})
    monkeypatch.setenv("VLP_CACHE", str(tmp_path / "cache"))  # a fresh clone: the demo data is generated
    # One thread: bit-reproducible (with two, the shuffled-pair control's descriptive AUROC varied 0.555-0.603
    # between runs around the 0.60 limit; with one it is 0.592 every time).
    monkeypatch.setenv("VLP_DEMO_THREADS", "1")
    code = main(["demo", "ecg", "--out", str(tmp_path / "runs"), "--no-progress"])
    (report,) = (tmp_path / "runs").glob("demo-*/report.md")
    text = report.read_text()
    row = re.search(r"^\| ecg \| zero-shot macro AUROC \| ([0-9.]+) \| ≥ ([0-9.]+) \| (\w+) \|", text, re.M)
    assert row, text
    auroc, target, verdict = float(row.group(1)), float(row.group(2)), row.group(3)
    assert target == 0.90
    assert code == 0 and verdict == "pass" and auroc >= target, text
    assert list((report.parent / "ecg").glob("*.png")), "the demo writes its plots"
    (metrics_path,) = (tmp_path / "runs").rglob("metrics.json")
    m = json.loads(metrics_path.read_text())
    for key in ("control random encoder AUROC (clinical)", "control shuffled pairs AUROC (clinical)",
                "control random encoder AUROC (descriptive)", "control shuffled pairs AUROC (descriptive)"):  # fmt: skip
        assert m[key] <= 0.60, (key, m[key])
    for frac in ("1%", "10%", "100%"):
        assert 0.5 < m[f"linear probe {frac} AUROC"] <= 1.0
    (table,) = (tmp_path / "runs").rglob("results_table.md")
    lines = table.read_text()
    assert lines.count("zero-shot, clinical prompts") == 3 and lines.count("zero-shot, descriptive prompts") == 3
    assert lines.count("linear probe") == 3 and len(re.findall(r"^- (MET|MISSED): ", lines, re.M)) == 5
