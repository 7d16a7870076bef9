"""Soft-DTW forward+backward: vlp_surgical.dtw vs tslearn, pysdtw, ddtw (numba) and a cell-by-cell loop.

``ours`` is the default ``soft_dtw`` (on CPU: the numba fast path, parallel over the batch); ``ours (wavefront)`` is
the PyTorch anti-diagonal wavefront (``backend="analytic"``, the GPU / no-numba path).

Every implementation computes the squared-Euclidean soft-DTW (γ = 0.1) between ``x [B, N, D]`` and ``y [B, M, D]``
and back-propagates the sum to ``x``; timings are interleaved in one process (medians), warm-up calls first so numba
compilation is not timed. Peak memory is the resident-set growth during one forward+backward (``_common.PeakRSS``).
The cell-by-cell loop mimics the reference research code (a Python double loop over a list-of-lists table, batched
over B on a trailing dim, autograd through every cell) without its per-cell table clones.

    uv run python benchmarks/surgical_softdtw.py            # all configurations
    uv run python benchmarks/surgical_softdtw.py --quick    # smoke run
    uv run python benchmarks/surgical_softdtw.py --no-loop  # skip the (very slow) cell-by-cell loop
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import PeakRSS, env_line, fmt_bytes, fmt_ratio, interleaved, markdown_table, median  # noqa: E402

from vlp_surgical.dtw import pairwise_sqeuclidean, soft_dtw  # noqa: E402

GAMMA = 0.1


def cell_loop(x: torch.Tensor, y: torch.Tensor, xl: torch.Tensor, yl: torch.Tensor) -> torch.Tensor:
    cost = pairwise_sqeuclidean(x, y)
    b, n, m = cost.shape
    inf = torch.full((b,), float("inf"), dtype=cost.dtype)
    r = [[inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = torch.zeros(b, dtype=cost.dtype)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            nb = torch.stack((r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]), -1)
            r[i][j] = cost[:, i - 1, j - 1] - GAMMA * torch.logsumexp(-nb / GAMMA, -1)
    return r[n][m]


def make_impls(x: torch.Tensor, y: torch.Tensor, xl: torch.Tensor, yl: torch.Tensor, equal: bool, with_loop: bool):
    impls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    impls["ours"] = lambda xx: soft_dtw(pairwise_sqeuclidean(xx, y), GAMMA, x_lengths=xl, y_lengths=yl)
    impls["ours (wavefront)"] = lambda xx: soft_dtw(pairwise_sqeuclidean(xx, y), GAMMA, x_lengths=xl, y_lengths=yl,
                                                    backend="analytic")  # fmt: skip
    notes = []
    try:
        from tslearn.metrics import SoftDTWLossPyTorch

        peer = SoftDTWLossPyTorch(gamma=GAMMA)
        if equal:
            impls["tslearn"] = lambda xx: peer(xx, y)
        else:  # no lengths argument: one call per sample on the unpadded sequences
            impls["tslearn"] = lambda xx: torch.stack(
                [peer(xx[k : k + 1, : xl[k]], y[k : k + 1, : yl[k]])[0] for k in range(len(xl))]
            )
    except ImportError:
        notes.append("tslearn not installed")
    try:
        import pysdtw
        from torch.nn.utils.rnn import pack_padded_sequence

        ps = pysdtw.SoftDTW(gamma=GAMMA, use_cuda=False)
        if equal:
            impls["pysdtw"] = lambda xx: ps(xx, y)
        else:
            impls["pysdtw"] = lambda xx: ps(
                pack_padded_sequence(xx, xl, batch_first=True, enforce_sorted=False),
                pack_padded_sequence(y, yl, batch_first=True, enforce_sorted=False),
            )
    except ImportError:
        notes.append("pysdtw not installed")
    try:
        from ddtw import SDTW

        # ddtw returns only the batch mean; × B gives the same objective as the sums of the others.
        dd = SDTW(gamma=GAMMA, normalization="none", backend="cpu_numba", dtype_float=x.dtype)
        impls["ddtw-numba"] = lambda xx: dd(C=pairwise_sqeuclidean(xx, y), list_N=xl, list_M=yl) * len(xl)
    except ImportError:
        notes.append("ddtw not installed")
    if with_loop:
        impls["cell loop"] = lambda xx: cell_loop(xx, y, xl, yl)
    return impls, notes


def run_config(b: int, n: int, m: int, d: int, equal: bool, with_loop: bool, repeats: int,
               only: set[str] | None = None) -> list[list[object]]:  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, d, generator=g)
    y = torch.randn(b, m, d, generator=g)
    if equal:
        xl, yl = torch.full((b,), n), torch.full((b,), m)
    else:
        xl = torch.randint(n // 4, n + 1, (b,), generator=g)
        yl = torch.randint(m // 4, m + 1, (b,), generator=g)
    impls, _ = make_impls(x, y, xl, yl, equal, with_loop)
    if only:
        impls = {k: v for k, v in impls.items() if k == "ours" or k in only}

    def once(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float, torch.Tensor]:
        xx = x.clone().requires_grad_(True)
        t = time.perf_counter()
        v = fn(xx)
        v.sum().backward()
        return time.perf_counter() - t, float(v.detach().sum()), xx.grad

    ref_val, ref_grad = None, None
    checks: dict[str, tuple[float, float]] = {}
    for name, fn in impls.items():  # warm-up (numba compiles) + agreement with ours
        _, val, grad = once(fn)
        if name == "ours":
            ref_val, ref_grad = val, grad
        gdiff = float((grad - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-12))
        checks[name] = (abs(val - ref_val) / max(1.0, abs(ref_val)), gdiff)
    mem = {}
    for name, fn in impls.items():
        with PeakRSS() as p:
            once(fn)
        mem[name] = p.hwm
    fns = {k: (lambda f=f: once(f)[0]) for k, f in impls.items() if k != "cell loop"}
    times = interleaved(fns, repeats)
    if "cell loop" in impls:
        times["cell loop"] = [once(impls["cell loop"])[0] for _ in range(2)]
    base = median(times["ours"])
    rows = []
    for name in impls:
        t = median(times[name])
        rows.append([f"B={b} N={n} M={m} D={d}" + ("" if equal else " (unequal)") if name == "ours" else "", name,
                     f"{t * 1e3:.1f}", fmt_ratio(t / base), fmt_bytes(mem[name]), f"{checks[name][0]:.1e}", f"{checks[name][1]:.1e}"])  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-loop", action="store_true", help="skip the cell-by-cell loop")
    ap.add_argument("--impls", default="", help="comma-separated peers to run besides ours (default: all)")
    ap.add_argument("--configs", default="", help="comma-separated indices of the configurations to run (default: all)")
    args = ap.parse_args()
    configs = [(64, 64, 64, 32, True, True), (256, 64, 64, 32, True, False), (64, 128, 128, 32, True, False),
               (64, 64, 64, 32, False, False)]  # fmt: skip
    if args.quick:
        configs, args.repeats = [(8, 16, 16, 8, True, True), (8, 16, 12, 8, False, False)], 2
    print(f"- {env_line()}")
    if args.no_loop:
        configs = [c[:5] + (False,) for c in configs]
    if args.configs:
        configs = [configs[int(i)] for i in args.configs.split(",")]
    only = set(args.impls.split(",")) if args.impls else None
    flags = (" --quick" if args.quick else "") + (" --no-loop" if args.no_loop else "")
    flags += (f" --impls {args.impls}" if args.impls else "") + (f" --configs {args.configs}" if args.configs else "")
    flags += f" --repeats {args.repeats}" if args.repeats != 5 and not args.quick else ""
    print(f"- reproduce: `uv run python benchmarks/surgical_softdtw.py{flags}`")
    from vlp_surgical.dtw import numba_available

    print(f"- ours = numba fast path: {numba_available()}; torch threads {torch.get_num_threads()}")
    rows: list[list[object]] = []
    for cfg in configs:
        rows += run_config(*cfg, repeats=args.repeats, only=only)
    print()
    print(markdown_table(["config", "impl", "median ms (fwd+bwd)", "time / ours", "peak ΔRSS", "rel. diff of value", "max grad diff / max grad"],
                         rows))  # fmt: skip


if __name__ == "__main__":
    main()
