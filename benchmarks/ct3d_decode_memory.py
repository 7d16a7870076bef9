"""Peak memory of decoding one 256³ CT volume with the demo VAE architecture, full vs sliding-window decoding.

The demo VAE (``VAEModule(channels=(16, 32, 32), latent_channels=4)``, ×4 per axis) decodes a 4 × 64³ latent to a
1 × 256³ volume. Untrained weights: memory and time depend on the architecture, not on the weights. Each variant runs
in a fresh subprocess (``--worker``); the number is the peak RSS increase during the decode over the RSS right before
it (``_common.PeakRSS``: VmHWM after ``clear_refs``), with ``MALLOC_MMAP_THRESHOLD_`` set so that freed tensors leave
RSS. It includes the 64 MiB output volume (and, for sliding windows, MONAI's output and weight-count buffers).

    uv run python benchmarks/ct3d_decode_memory.py                  # full, windows 32³ and 16³ (latent voxels)
    uv run python benchmarks/ct3d_decode_memory.py --size 128       # smaller smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, env_line, fmt_bytes, markdown_table, repro_command  # noqa: E402


def worker(size: int, window: int, overlap: float, threads: int) -> dict:
    import torch

    from vlp_ct3d.gen import VAEModule

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vae = VAEModule(channels=(16, 32, 32), latent_channels=4).eval()
    z = torch.randn(1, 4, *(size // vae.downsample,) * 3)
    with torch.inference_mode():
        vae.decode(torch.randn(1, 4, 4, 4, 4), window=window or None, overlap=overlap)  # warm-up (kernels, pools)
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            out = vae.decode(z, window=window or None, overlap=overlap)
        wall = time.perf_counter() - t0
    assert out.shape == (1, 1, size, size, size)
    return {"hwm": peak.hwm, "poll": peak.poll, "method": peak.method, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256, help="output volume edge (voxels)")
    ap.add_argument("--windows", type=int, nargs="+", default=[0, 32, 16], help="latent windows; 0 = full decode")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--window", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.size, args.window, args.overlap, args.threads)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    rows, res = [], {}
    for w in args.windows:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--size", str(args.size), "--window", str(w),
               "--overlap", str(args.overlap), "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"worker failed (window {w}): {out.stderr[-2000:]}", file=sys.stderr)
            continue
        res[w] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"window {w or 'full'}: {json.dumps(r)}", flush=True)  # partial results survive an interrupted run
        lat = args.size // 4
        name = "full decode" if w == 0 else f"sliding window {min(w, lat)}³ latent ({4 * min(w, lat)}³ voxels)"
        rows.append([name, fmt_bytes(r["hwm"]), fmt_bytes(r["poll"]), f"{r['wall']:.1f}"])
    full = res.get(0, {}).get("hwm")
    for row, w in zip(rows, [w for w in args.windows if w in res]):
        row.append(f"{full / res[w]['hwm']:.1f}x" if full else "n/a")
    method = next(iter(res.values()))["method"] if res else "n/a"
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`")
    print(f"- output {args.size}³ from a 4 × {args.size // 4}³ latent, overlap {args.overlap}, Gaussian blending; "
          f"peak = {method} (poll = 1 ms sampler, a lower bound)\n")  # fmt: skip
    print(markdown_table(["decode", "peak RSS increase", "poll", "wall s", "full / this"], rows))


if __name__ == "__main__":
    main()
