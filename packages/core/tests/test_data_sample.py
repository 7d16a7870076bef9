from __future__ import annotations

from pathlib import Path

import pytest

from vlp_core.data import sample_data_dir
from vlp_core.testing import require_sample_data


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ecg").mkdir()
    (tmp_path / "ecg" / "x.hea").write_text("x")
    monkeypatch.setenv("VLP_SAMPLE_DATA", str(tmp_path))
    assert sample_data_dir() == tmp_path.resolve()
    assert sample_data_dir("ecg", "x.hea") == tmp_path.resolve() / "ecg" / "x.hea"
    assert sample_data_dir("ecg", "missing.hea") is None
    assert require_sample_data("ecg", "x.hea").is_file()
    with pytest.raises(pytest.skip.Exception, match="'ecg/missing.hea' not found"):
        require_sample_data("ecg", "missing.hea")
    monkeypatch.setenv("VLP_SAMPLE_DATA", str(tmp_path / "absent"))
    assert sample_data_dir() is None  # an explicit override is never second-guessed
    with pytest.raises(pytest.skip.Exception, match="set \\$VLP_SAMPLE_DATA"):
        require_sample_data("ecg")


def test_walks_up_to_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLP_SAMPLE_DATA", raising=False)
    data = tmp_path / "shared" / "data"
    (data / "cxr").mkdir(parents=True)
    project = tmp_path / "main" / "packages" / "core"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    found = sample_data_dir("cxr")
    # Either the tmp layout or the real checkout's ../shared/data (found via this package's location) is fine,
    # but the cwd walk comes first.
    assert found == data.resolve() / "cxr"


def test_real_sample_data_or_skip() -> None:
    path = require_sample_data("cxr", "nih_00000001_000.png")
    assert path.stat().st_size > 0
