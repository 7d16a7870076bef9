from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def s3_emulator():
    """A local S3 emulator on 127.0.0.1 with an empty bucket ``vlp-test`` (see vlp_core.testing.local_s3_emulator)."""
    from vlp_core.testing import local_s3_emulator

    with local_s3_emulator() as opts:
        yield opts
