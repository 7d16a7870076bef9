from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def sample_record(*parts: str) -> str:
    """Path (without suffix) of a shared real sample record, or skip with a clear reason."""
    from vlp_core.testing import require_sample_data

    hea = require_sample_data("ecg", *parts[:-1], parts[-1] + ".hea")
    return str(hea)[:-4]


@pytest.fixture(scope="session")
def fake_ptbxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200-record synthetic PTB-XL tree at 100 Hz (written with real WFDB files)."""
    from vlp_ecg.synth import make_fake_ptbxl

    return make_fake_ptbxl(tmp_path_factory.mktemp("ptbxl"), 200, rates=(100,), seed=0)


@pytest.fixture(scope="session")
def fake_store(fake_ptbxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlp_ecg.datasets import LoadConfig, prepare_store, ptbxl_index

    out = tmp_path_factory.mktemp("store")
    prepare_store(ptbxl_index(fake_ptbxl, labels="all"), out, LoadConfig(target_fs=100.0), progress=False)
    return out


@pytest.fixture(scope="module")
def s3_emulator():
    """A local S3 emulator on 127.0.0.1 with an empty bucket ``vlp-test`` (see vlp_core.testing.local_s3_emulator)."""
    from vlp_core.testing import local_s3_emulator

    with local_s3_emulator() as opts:
        yield opts
