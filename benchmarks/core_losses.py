"""Benchmark: vlp-core ClipLoss / SigLipLoss vs open_clip's, forward+backward time and peak memory on CPU.

Like with like: unit-norm float32 features that require grad, ``normalize_inputs=False`` in ours (open_clip does
not normalise), a learnable log logit scale (and bias for SigLIP) exponentiated inside the timed region for both,
and one ``loss.backward()`` that also produces the scale/bias gradients.

Rows per loss and batch: ours dense (``chunk_size=None``), ours chunked (``chunk_size=--chunk-size``), open_clip.
Times are measured in this process, interleaved round-robin (A B C, B C A, ...), medians over ``--repeats``.
Peak memory is measured in a fresh subprocess per (loss, implementation, batch) (``--worker``): the peak RSS
increase during one forward+backward over the RSS right before it (see ``_common.PeakRSS``).

    uv run python benchmarks/core_losses.py            # full run (~10 min on 2 busy cores)
    uv run python benchmarks/core_losses.py --quick    # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import (  # noqa: E402
    PeakRSS,
    env_line,
    fmt_bytes,
    fmt_ratio,
    interleaved,
    markdown_table,
    median,
    repro_command,
)

IMPLS = ("ours dense", "ours chunked", "open_clip")
LOSSES = ("clip", "siglip")
DEFAULT_BATCHES = (256, 512, 1024, 2048, 4096, 8192)


def _open_clip_loss_module(standalone: bool) -> ModuleType:
    """open_clip's ``loss.py``. ``standalone`` loads that file alone (same code, skips the 15 s package import)."""
    if not standalone:
        import open_clip.loss

        return open_clip.loss
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    loss_spec = importlib.util.spec_from_file_location("_open_clip_loss_standalone", path)
    assert loss_spec is not None and loss_spec.loader is not None
    module = importlib.util.module_from_spec(loss_spec)
    loss_spec.loader.exec_module(module)
    return module


def make_step(
    loss: str, impl: str, a: torch.Tensor, b: torch.Tensor, chunk: int, oc: ModuleType
) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
    """A closure computing the loss on ``(a, b)`` plus the parameters whose grads it produces."""
    from vlp_core.losses import ClipLoss, SigLipLoss

    if impl.startswith("ours"):
        chunk_size = chunk if impl == "ours chunked" else None
        if loss == "clip":
            mod = ClipLoss(chunk_size=chunk_size, normalize_inputs=False)
        else:
            mod = SigLipLoss(chunk_size=chunk_size, normalize_inputs=False)
        return (lambda: mod(a, b)["loss"]), list(mod.parameters())
    if impl != "open_clip":
        raise ValueError(impl)
    if loss == "clip":
        log_scale = torch.nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        oc_clip = oc.ClipLoss()
        return (lambda: oc_clip(a, b, log_scale.exp())), [log_scale]
    log_scale = torch.nn.Parameter(torch.full((1,), math.log(10.0)))
    bias = torch.nn.Parameter(torch.full((1,), -10.0))
    oc_sig = oc.SigLipLoss()
    return (lambda: oc_sig(a, b, log_scale.exp(), bias)), [log_scale, bias]


def make_features(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, dim, generator=g), dim=-1).requires_grad_(True)
    # Correlated pairs so the loss is not trivially uniform.
    b = F.normalize(a.detach() + 0.5 * torch.randn(n, dim, generator=g), dim=-1).requires_grad_(True)
    return a, b


def _clear(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.grad = None


def fwd_bwd(fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> float:
    _clear(leaves)
    t0 = time.perf_counter()
    fn().backward()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- memory worker
def worker(loss: str, impl: str, n: int, dim: int, chunk: int, seed: int) -> None:
    oc = _open_clip_loss_module(standalone=True)
    # Warm up lazily initialised machinery (thread pool, kernels) on a small batch first.
    small_a, small_b = make_features(min(n, 256), dim, seed)
    fn, params = make_step(loss, impl, small_a, small_b, chunk, oc)
    fwd_bwd(fn, [small_a, small_b, *params])
    a, b = make_features(n, dim, seed)
    fn, params = make_step(loss, impl, a, b, chunk, oc)
    _clear(params)
    with PeakRSS() as peak:
        fn().backward()
    print(json.dumps({"hwm": peak.hwm, "poll": peak.poll, "method": peak.method}))


def measure_memory(loss: str, impl: str, n: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    # Fixed mmap threshold: every tensor >= 128 KiB is its own mmap and goes back to the kernel on free.
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", loss, impl, str(n)]
    cmd += ["--dim", str(args.dim), "--chunk-size", str(args.chunk_size), "--seed", str(args.seed)]
    cmd += ["--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"worker failed ({loss}, {impl}, {n}): {out.stderr[-2000:]}", file=sys.stderr)
        return {"hwm": float("nan"), "poll": float("nan"), "method": "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- correctness
def agreement(loss: str, a: torch.Tensor, b: torch.Tensor, chunk: int, oc: ModuleType) -> dict[str, float]:
    """Max relative difference of loss and feature grads of each of ours vs open_clip (same math check)."""
    results = {}
    for impl in IMPLS:
        fn, params = make_step(loss, impl, a, b, chunk, oc)
        _clear([a, b, *params])
        value = fn()
        value.backward()
        results[impl] = (value.detach().clone(), a.grad.clone(), b.grad.clone())
    ref = results["open_clip"]
    out = {}
    for impl in IMPLS[:2]:
        errs = [((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item() for x, y in zip(results[impl], ref)]
        out[impl] = max(errs)
    _clear([a, b])
    return out


# ---------------------------------------------------------------------------------------------- main
def growth(peaks: dict[int, float]) -> tuple[float, float]:
    """Log-log slope of peak memory vs batch over the largest three batches, and peak(N_max)/peak(N_max/2)."""
    ns = sorted(n for n, p in peaks.items() if p == p and p > 0)
    if len(ns) < 2:
        return float("nan"), float("nan")
    tail = ns[-3:]
    xs = [math.log(n) for n in tail]
    ys = [math.log(peaks[n]) for n in tail]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    last = ns[-1]
    half = last // 2
    doubling = peaks[last] / peaks[half] if half in peaks and peaks[half] > 0 else float("nan")
    return slope, doubling


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per batch (below --large-batch)")
    p.add_argument("--repeats-large", type=int, default=3, help="timed rounds at batches >= --large-batch")
    p.add_argument("--large-batch", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds per batch")
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess peak-memory measurement")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: batches 256 1024, 3 repeats")
    p.add_argument("--worker", nargs=3, metavar=("LOSS", "IMPL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        loss, impl, n = args.worker
        worker(loss, impl, int(n), args.dim, args.chunk_size, args.seed)
        return
    if args.quick:
        args.batches, args.repeats, args.repeats_large = [256, 1024], 3, 3

    oc = _open_clip_loss_module(standalone=False)
    print(f"# vlp-core losses vs open_clip (forward+backward, float32, dim {args.dim}, CPU)\n")
    print(f"- {env_line()}")
    print(f"- chunk_size {args.chunk_size}; repeats {args.repeats} ({args.repeats_large} at N >= {args.large_batch})")
    print(f"- reproduce: `{repro_command()}`\n", flush=True)

    times: dict[tuple[str, int], dict[str, list[float]]] = {}
    errs: dict[tuple[str, int], dict[str, float]] = {}
    t_start = time.perf_counter()
    for n in args.batches:
        a, b = make_features(n, args.dim, args.seed)
        for loss in args.losses:
            errs[loss, n] = agreement(loss, a, b, args.chunk_size, oc)  # also serves as a warm-up round
            steps = {impl: make_step(loss, impl, a, b, args.chunk_size, oc) for impl in IMPLS}
            fns = {impl: (lambda f=f, lv=[a, b, *ps]: fwd_bwd(f, lv)) for impl, (f, ps) in steps.items()}
            # The very first cell also pays process-level one-time costs (thread pool, page faults): warm up more.
            interleaved(fns, args.warmup + (3 if n == args.batches[0] else 0))
            reps = args.repeats_large if n >= args.large_batch else args.repeats
            times[loss, n] = interleaved(fns, reps)
            summary = ", ".join(f"{k} {median(v) * 1e3:.1f} ms" for k, v in times[loss, n].items())
            print(f"  timed {loss} N={n}: {summary}", file=sys.stderr, flush=True)
    t_time = time.perf_counter() - t_start

    mem: dict[tuple[str, str, int], dict] = {}
    method = "not measured"
    if not args.no_memory:
        for loss in args.losses:
            for n in args.batches:
                for impl in IMPLS:
                    mem[loss, impl, n] = measure_memory(loss, impl, n, args)
                    method = mem[loss, impl, n]["method"]
                print(f"  memory {loss} N={n} done", file=sys.stderr, flush=True)
    t_total = time.perf_counter() - t_start

    for loss in args.losses:
        title = "ClipLoss (symmetric InfoNCE)" if loss == "clip" else "SigLipLoss (pairwise sigmoid)"
        print(f"## {title}\n")
        rows = []
        for n in args.batches:
            ref_t = median(times[loss, n]["open_clip"])
            ref_m = mem.get((loss, "open_clip", n), {}).get("hwm", float("nan"))
            for impl in IMPLS:
                ts = times[loss, n][impl]
                m = mem.get((loss, impl, n), {})
                hwm, poll = m.get("hwm", float("nan")), m.get("poll", float("nan"))
                err = errs[loss, n].get(impl)
                rows.append(
                    [
                        n if impl == IMPLS[0] else "",
                        impl,
                        f"{median(ts) * 1e3:.1f}",
                        f"{min(ts) * 1e3:.1f}",
                        fmt_ratio(median(ts) / ref_t),
                        fmt_ratio(min(ts) / min(times[loss, n]["open_clip"])),
                        fmt_bytes(hwm),
                        fmt_bytes(poll),
                        fmt_ratio(hwm / ref_m) if ref_m == ref_m and ref_m > 0 else "n/a",
                        fmt_bytes(n * n * 4) if impl == IMPLS[0] else "",
                        "ref" if err is None else f"{err:.1e}",
                    ]
                )
        header = [
            "N",
            "impl",
            "median ms",
            "min ms",
            "time / open_clip",
            "min / open_clip",
            "peak ΔRSS",
            "peak ΔRSS (poll)",
            "mem / open_clip",
            "one N×N f32",
            "max rel err vs open_clip",
        ]
        print(markdown_table(header, rows) + "\n")
        if mem:
            grow_rows = []
            for impl in IMPLS:
                peaks = {n: float(mem[loss, impl, n]["hwm"]) for n in args.batches}
                slope, dbl = growth(peaks)
                grow_rows.append([impl, f"{slope:.2f}", fmt_ratio(dbl)])
            tail = sorted(args.batches)[-3:]
            print(
                markdown_table(
                    ["impl", f"peak ∝ N^k, k fitted on N={tail}", f"peak({tail[-1]})/peak({tail[-1] // 2})"],
                    grow_rows,
                )
                + "\n"
            )

    print(
        f"Times: median (and min) of forward+backward wall time over interleaved rounds in one process; "
        f"'time / open_clip' = ratio of medians, 'min / open_clip' = ratio of minima. Peak memory: fresh subprocess per cell, peak RSS increase over "
        f"the RSS right before one forward+backward ({method}; 'poll' = 1 ms /proc/self/statm sampler, a lower "
        f"bound), with MALLOC_MMAP_THRESHOLD_=131072 so freed tensors leave RSS; includes the N×{args.dim} "
        f"feature grads. 'max rel err' = max |ours - open_clip| / max |open_clip| over loss and feature grads. "
        f"Wall: timing {t_time:.0f} s, total {t_total:.0f} s."
    )


if __name__ == "__main__":
    main()
