"""CT preprocessing throughput: the MONAI preset pipeline (load NIfTI -> RAS -> 10 mm -> HU window -> pad/crop)
computed every epoch vs served from the weights-only persistent cache (second epoch). Volumes/s and the ratio,
measured in one run on phantoms written to a temporary folder.

    uv run python benchmarks/ct3d_preprocess.py --n 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    args = ap.parse_args()
    import torch

    from vlp_ct3d.ctrate import CTReportDataset, ctrate_index
    from vlp_ct3d.synth import make_fake_ctrate
    from vlp_ct3d.transforms import build_transforms

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_fake_ctrate(Path(tmp) / "ctrate", n_train=args.n, n_valid=2, seed=0)
        frame = ctrate_index(root, "train")
        t = build_transforms("demo")
        plain = CTReportDataset(frame, t)
        cached = CTReportDataset(frame, t, cache_dir=Path(tmp) / "cache")

        def epoch(ds) -> float:
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            return time.perf_counter() - t0

        first_cached = epoch(cached)  # computes and writes the cache
        rows, times = [], {"no cache": [], "cache (hit)": []}
        for _ in range(2):  # interleaved epochs
            times["no cache"].append(epoch(plain))
            times["cache (hit)"].append(epoch(cached))
        base = min(times["no cache"])
        for name, ts in times.items():
            best = min(ts)
            rows.append([name, f"{args.n / best:.1f}", f"{base / best:.1f}x"])
        rows.append(["cache (first epoch, writing)", f"{args.n / first_cached:.1f}", f"{base / first_cached:.2f}x"])
    print(
        f"- {env_line()}\n- volumes: {args.n} phantoms 40x40x32 -> 32^3 (preset demo)\n- reproduce: `{repro_command()}`\n"
    )
    print(markdown_table(["pipeline", "volumes/s (best epoch)", "speed-up vs no cache"], rows))


if __name__ == "__main__":
    main()
