from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The wavefront kernel runs many tiny ops; intra-op threads only add synchronisation on a shared 2-core box
    (40x slower gradchecks under load). Restored after each test so other packages' tests are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
