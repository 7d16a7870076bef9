"""End to end: `vlp demo ecg` as a user runs it, asserting the demo's own target (CI: `pytest -m slow`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ecg_demo_meets_its_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlp_core.cli import main

    monkeypatch.setenv("VLP_CACHE", str(tmp_path / "cache"))  # a fresh clone: the demo data is generated
    code = main(["demo", "ecg", "--out", str(tmp_path / "runs"), "--no-progress"])
    (report,) = (tmp_path / "runs").glob("demo-*/report.md")
    text = report.read_text()
    row = re.search(r"^\| ecg \| zero-shot macro AUROC \| ([0-9.]+) \| ≥ ([0-9.]+) \| (\w+) \|", text, re.M)
    assert row, text
    auroc, target, verdict = float(row.group(1)), float(row.group(2)), row.group(3)
    assert target == 0.90
    assert code == 0 and verdict == "pass" and auroc >= target, text
    assert list((report.parent / "ecg").glob("*.png")), "the demo writes its plots"
