"""End to end: `vlp demo core` as a user runs it, asserting the demo's own target (CI: `pytest -m slow`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def run_demo_cli(domain: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``vlp demo <domain>`` with a fresh cache and return (exit code, report text)."""
    from vlp_core.cli import main

    monkeypatch.setenv("VLP_CACHE", str(tmp_path / "cache"))
    code = main(["demo", domain, "--out", str(tmp_path / "runs"), "--no-progress"])
    (report,) = (tmp_path / "runs").glob("demo-*/report.md")
    return code, report.read_text()


def result_row(report: str, domain: str) -> tuple[float, float, str]:
    """(value, target, verdict) of ``domain``'s row in the report's results table."""
    match = re.search(rf"^\| {re.escape(domain)} \| [^|]+ \| ([0-9.]+) \| ≥ ([0-9.]+) \| (\w+) \|", report, re.M)
    assert match, f"no result row for {domain!r} in the report:\n{report}"
    return float(match.group(1)), float(match.group(2)), match.group(3)


@pytest.mark.slow
def test_core_demo_meets_its_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = run_demo_cli("core", tmp_path, monkeypatch)
    value, target, verdict = result_row(report, "core")
    assert code == 0 and verdict == "pass" and value >= target, report
    assert target == 0.5  # the shapes demo's zero-shot accuracy target (chance is 1/9)
    assert "![core_shapes](core/core_shapes.png)" in report
    assert list((tmp_path / "runs").glob("demo-*/core/core_shapes.png")), "the demo writes its plot"
