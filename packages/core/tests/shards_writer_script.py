"""Toy prepared samples for test_data_shards.py, and a writer run as a script that can kill itself part-way.

usage: shards_writer_script.py OUT [KILL_AT]  (KILL_AT: SIGKILL the whole process group while preparing that input)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import numpy as np

N, CONFIG = 60, {"size": 8, "window": [-1000, 1000], "frames": "variable"}


def make_sample(i: int) -> dict[str, Any] | None:
    """One prepared sample of every kind a domain stores: a ragged clip ``[T, C, H, W]``, a volume ``[D, H, W]``,
    labels ``[K]``, a report, several captions and label names; input 13 is a bad record (skipped)."""
    if i == 13:
        return None
    rng = np.random.default_rng(i)
    return {
        "id": f"rec{i:03d}",
        "clip": rng.standard_normal((1 + i % 4, 3, 8, 8)).astype(np.float32),
        "volume": rng.integers(-1000, 1000, (4, 8, 8)).astype(np.int16),
        "labels": (rng.random(5) > 0.5).astype(np.float32),
        "text": f"report of record {i}",
        "captions": [f"caption {j} of {i}" for j in range(i % 3)],
        "label_names": ["afib"] if i % 2 else [],
        "valid_len": i,
    }


class KillingSample:
    """``make_sample`` that SIGKILLs the writer's whole process group (main process and workers) at one input."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at

    def __call__(self, i: int) -> dict[str, Any] | None:
        if i == self.kill_at:
            time.sleep(1.0)  # let the other worker finish its shards
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return make_sample(i)


if __name__ == "__main__":
    from vlp_core.data.shards import write_shards

    out, kill_at = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else -1
    write_shards(KillingSample(kill_at), list(range(N)), out, domain="toy", config=CONFIG, split="train",
                 chunk_bytes=4000, num_workers=2, progress=False)  # fmt: skip
