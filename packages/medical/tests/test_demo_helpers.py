"""Demo helpers that need no pretraining: thread choice, the validation-only guard."""

from __future__ import annotations

import os

import pytest

from vlp_medical.demo import demo_threads, validation_metrics


@pytest.mark.parametrize(("cores", "load", "expected"), [(2, 0.1, 2), (2, 1.2, 1), (2, 12.0, 1), (16, 3.0, 4),
                                                          (8, 5.2, 3)])  # fmt: skip
def test_demo_threads_use_idle_cores_only(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, expected: int
) -> None:
    monkeypatch.delenv("VLP_DEMO_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert demo_threads() == expected
    monkeypatch.setenv("VLP_DEMO_THREADS", "3")  # pinned: the load no longer matters
    assert demo_threads() == 3


def test_demo_threads_without_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("unavailable")

    monkeypatch.delenv("VLP_DEMO_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", no_load)
    assert demo_threads() == 2


def test_validation_metrics_never_reads_the_test_split() -> None:
    with pytest.raises(ValueError, match="never reads the test split"):
        validation_metrics(object(), None, 64, split="test")  # type: ignore[arg-type]
