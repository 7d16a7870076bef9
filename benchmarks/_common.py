"""Shared helpers for the vlp-core benchmark scripts (timing, peak RSS, markdown output).

Benchmarks are scripts, not tests: they never assert on times. The machine is shared, so every comparison is run
interleaved (A B A B ...) in one process and reported as medians plus the ratio of medians.
"""

from __future__ import annotations

import gc
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "PeakRSS",
    "env_line",
    "fmt_bytes",
    "fmt_ratio",
    "interleaved",
    "markdown_table",
    "median",
    "repro_command",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every ``fn`` once per round, round after round (A B C A B C ...); each returns one measured time.

    The order within a round rotates so no implementation always runs right after the same neighbour.
    """
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(fns[name]())
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakRSS:
    """Peak resident-set growth of this process inside a ``with`` block, two ways.

    * ``hwm``: the kernel high-water mark. ``/proc/self/clear_refs`` ("5") resets VmHWM to the current RSS on
      entry; VmHWM - RSS(entry) on exit is the exact peak increase (every page the kernel ever mapped in the block).
      Falls back to ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` deltas if clear_refs is not writable (then only
      valid when the block exceeds the process's earlier peak).
    * ``poll``: a background thread sampling ``/proc/self/statm`` every ``interval`` seconds (a lower bound; it can
      miss short spikes, especially on a busy machine).

    Memory that glibc keeps in its heap after ``free`` would hide allocations from RSS, so the benchmark workers
    are started with ``MALLOC_MMAP_THRESHOLD_`` set: every large tensor is then its own ``mmap``, returned to the
    kernel on free, and RSS tracks live tensor bytes.
    """

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.method = ""
        self.hwm = 0
        self.poll = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._max_poll = 0
        self._ru_base = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._max_poll = max(self._max_poll, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        import resource

        gc.collect()
        self._base = _rss_bytes()
        self._max_poll = self._base
        if _reset_hwm():
            self.method = "VmHWM after clear_refs=5"
        else:
            self.method = "ru_maxrss delta"
            self._ru_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self._base = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._max_poll = max(self._max_poll, _rss_bytes())
        self.poll = self._max_poll - self._base
        if self.method.startswith("VmHWM"):
            self.hwm = (_status_kb("VmHWM") or 0) - self._base
        else:
            self.hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - max(self._ru_base, self._base)


def fmt_bytes(n: float) -> str:
    if n != n:  # nan
        return "n/a"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}×"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def env_line() -> str:
    import torch

    try:
        load = "load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load avg n/a"
    return (
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, {load}"
    )


def repro_command(argv: Sequence[str] | None = None) -> str:
    """The command line that reproduces this run, run from the repository root (no machine paths)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    try:
        script_s = script.relative_to(root).as_posix()
    except ValueError:
        script_s = f"benchmarks/{script.name}"
    return f"uv run python {shlex.join([script_s, *argv[1:]])}"
