"""DICOM decode + preprocess throughput (images/s) for 1024² and 2048² 12-bit radiographs, uncached vs cached
(the dataset's in-memory cache of preprocessed tensors, second pass), against a plain pydicom ``pixel_array`` decode.

    uv run python benchmarks/medical_dicom.py [--n 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from _common import env_line, markdown_table, repro_command

from vlp_medical.datasets import CxrTextDataset
from vlp_medical.io import write_dicom
from vlp_medical.transforms import CxrTransform


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for side in (1024, 2048):
            paths = []
            for i in range(args.n):
                px = rng.integers(0, 4096, (side, side), dtype=np.uint16)
                paths.append(str(write_dicom(Path(tmp) / f"{side}_{i}.dcm", px, photometric="MONOCHROME1",
                                             window=(2048, 4096))))  # fmt: skip
            t = time.perf_counter()
            for p in paths:
                _ = pydicom.dcmread(p).pixel_array
            raw = args.n / (time.perf_counter() - t)
            frame = pd.DataFrame({"key": [str(i) for i in range(args.n)], "path": paths, "text": "x", "split": "test"})
            ds = CxrTextDataset(frame, transform=CxrTransform(size=224), cache=True)
            t = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            uncached = args.n / (time.perf_counter() - t)
            t = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            cached = args.n / (time.perf_counter() - t)
            rows.append([f"{side}²", f"{raw:.1f}", f"{uncached:.1f}", f"{uncached / raw:.2f}×", f"{cached:.0f}"])
    print(markdown_table(["image", "pydicom pixel_array img/s", "read_dicom + 224 px transform img/s (uncached)",
                          "uncached / pixel_array", "cached img/s"], rows))  # fmt: skip
    print()
    print(f"- {env_line()}; {args.n} images per size, MONOCHROME1 12-bit, window from the header")
    print(f"- reproduce: `{repro_command()}`")


if __name__ == "__main__":
    main()
