"""ECG loading + preprocessing throughput: naive per-record ``wfdb.rdsamp`` + scipy resampling vs the prepared store.

Records: 10 s, 500 Hz, 12 leads (PTB-XL ``records500`` layout, synthetic). Both paths end with the same model input:
12 x 1000 (100 Hz) per-lead z-scored float32. Prints a markdown row; the ratio is measured side by side in one run.

    uv run python benchmarks/ecg_loading.py --n 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly


def naive_epoch(paths: list[str]) -> float:
    t = time.perf_counter()
    for p in paths:
        sig, _ = wfdb.rdsamp(p)
        x = resample_poly(sig.T, 1, 5, axis=-1).astype(np.float32)
        x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    return time.perf_counter() - t


def store_epoch(ds) -> float:
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    from vlp_ecg.datasets import ECGStore, ECGTextDataset, LoadConfig, prepare_store, ptbxl_index
    from vlp_ecg.synth import make_fake_ptbxl

    with tempfile.TemporaryDirectory() as tmp:
        root = make_fake_ptbxl(Path(tmp) / "ptbxl", args.n, rates=(500,), seed=0)
        index = ptbxl_index(root, sampling_rate=500, labels="all")
        paths = list(index.frame["path"])
        t = time.perf_counter()
        prepare_store(index, Path(tmp) / "store", LoadConfig(target_fs=100.0, duration=10.0), progress=False)
        t_prep = time.perf_counter() - t
        ds = ECGTextDataset(ECGStore(Path(tmp) / "store"))
        naive = [naive_epoch(paths) for _ in range(2)]
        ours = [store_epoch(ds) for _ in range(2)]
    n = args.n
    r_naive, r_ours = n / naive[1], n / ours[1]
    print(
        "| records | naive rdsamp+resample (rec/s, epoch 2) | prepared store (rec/s, epoch 2) | speed-up | "
        "one-time prepare (s) |"
    )
    print("|---|---|---|---|---|")
    print(f"| {n} x 10 s, 500 Hz, 12 leads | {r_naive:.0f} | {r_ours:.0f} | {r_ours / r_naive:.1f}x | {t_prep:.1f} |")


if __name__ == "__main__":
    main()
