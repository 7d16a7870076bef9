"""One training step of the `vlp demo ecg` model on CPU: samples/s and the share of time in data vs compute.

uv run python benchmarks/ecg_train_step.py --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from torch.utils.data import DataLoader

    from vlp_ecg.datasets import ECGStore, ECGTextDataset, LoadConfig, collate_ecg, prepare_store, ptbxl_index
    from vlp_ecg.demo import demo_model
    from vlp_ecg.synth import make_fake_ptbxl

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_fake_ptbxl(Path(tmp) / "ptbxl", args.batch_size * (args.steps + 2), seed=0)
        prepare_store(ptbxl_index(root, labels="all"), Path(tmp) / "store", LoadConfig(target_fs=100.0), progress=False)
        ds = ECGTextDataset(
            ECGStore(Path(tmp) / "store"), augment=[{"name": "amplitude_scale"}, {"name": "noise", "std": 0.01}]
        )
        model = demo_model("tiny", max_steps=1000)
        model.towers["text"](sorted(set(ds.frame["text"])))  # warm the frozen text cache, as the demo does
        opt = model.configure_optimizers()["optimizer"]
        loader = iter(DataLoader(ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate_ecg, drop_last=True))
        t_data = t_comp = 0.0
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            batch = next(loader)
            t1 = time.perf_counter()
            loss = model.compute_losses(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if step:  # skip the warm-up step
                t_data += t1 - t0
                t_comp += t2 - t1
    total = t_data + t_comp
    sps = args.steps * args.batch_size / total
    print("| model | batch | samples/s | data share | compute share |")
    print("|---|---|---|---|---|")
    print(
        f"| demo MELP (ResNet1d-tiny, 3 losses), {args.threads} threads | {args.batch_size} | {sps:.0f} | "
        f"{100 * t_data / total:.0f} % | {100 * t_comp / total:.0f} % |"
    )


if __name__ == "__main__":
    main()
