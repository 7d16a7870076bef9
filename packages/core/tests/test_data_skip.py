from __future__ import annotations

import logging

import pytest

from vlp_core.data import BadInputError, CorruptRecordError, SkipPolicy, redact


def test_default_reraises() -> None:
    policy = SkipPolicy()
    with pytest.raises(BadInputError, match="broken"), policy.guard("rec-1"):
        raise BadInputError("broken")
    err = OSError("disk")
    with pytest.raises(OSError, match="disk"):
        policy.handle("rec-2", err)
    assert policy.report()["n_skipped"] == 0


def test_skip_bad_counts_logs_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    policy = SkipPolicy(skip_bad=True, name="ECGs")
    caplog.set_level(logging.WARNING, logger="vlp_core.data")
    seen = []
    for key, exc in [
        ("r1", CorruptRecordError("bad header")),
        ("r2", OSError("io")),
        ("r3", None),
        ("r4", CorruptRecordError("truncated")),
    ]:
        with policy.guard(key) as g:
            if exc is not None:
                raise exc
            seen.append(key)
        assert g.skipped == (exc is not None)
    assert seen == ["r3"]
    rep = policy.report()
    assert rep["n_skipped"] == 3 and rep["keys"] == ["r1", "r2", "r4"]
    assert rep["by_type"] == {"CorruptRecordError": 2, "OSError": 1}
    assert policy.summary() == "skipped 3 bad ECGs (CorruptRecordError: 2, OSError: 1)"
    assert "r1" in caplog.text and "bad header" in caplog.text and "CorruptRecordError" in caplog.text
    policy.reset()
    assert policy.summary() == "no bad ECGs skipped"


def test_catch_narrows_and_log_limit(caplog: pytest.LogCaptureFixture) -> None:
    policy = SkipPolicy(skip_bad=True, catch=(BadInputError,), log_limit=2)
    with pytest.raises(TypeError), policy.guard("k"):
        raise TypeError("a bug, not bad data")
    caplog.set_level(logging.WARNING, logger="vlp_core.data")
    for i in range(5):
        policy.handle(f"k{i}", BadInputError("x"))
    assert policy.n_skipped == 5
    assert "k1" in caplog.text and "k3" not in caplog.text and "further skips" in caplog.text


def test_redact() -> None:
    a = redact("MRN-0012345", salt="s1")
    assert a == redact("MRN-0012345", salt="s1") and a.startswith("id-") and len(a) == 15
    assert "0012345" not in a and a != redact("MRN-0012346", salt="s1") and a != redact("MRN-0012345", salt="s2")
    assert redact(17) == redact("17")  # same process salt
