"""`vlp-surgical fit --engine lightning` on 2 CPU processes (gloo DDP); run by test_lightning.py, not collected.

Lightning launches the second rank by re-running this script; each rank saves its final model weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    root, tmp = sys.argv[1], Path(sys.argv[2])
    import vlp_surgical.cli as cli

    captured = {}
    original = cli._fit_lightning

    def spy(model, *args, **kw):
        captured["model"] = model
        return original(model, *args, **kw)

    cli._fit_lightning = spy
    cli.fit(root=root, out=str(tmp / "out"), steps=4, videos_per_batch=1, img_size=16, frame_dim=16, embed_dim=16,
            dtw_weight=1.0, ssl_weight=0.1, retrieval_weight=0.5, refresh_every=2, engine="lightning",
            accelerator="cpu", devices=2)  # fmt: skip
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    state = {k: v for k, v in captured["model"].state_dict().items() if not k.startswith("text.encoder.")}
    torch.save(state, tmp / f"rank{rank}.pt")
