"""Choosing Lightning's ``precision`` for the hardware a run lands on.

``"auto"`` means bf16 mixed precision where the hardware computes in bf16 natively (CUDA devices that support it;
x86 CPUs with AMX-BF16 or AVX512-BF16) and full fp32 everywhere else: on a CPU without those instructions oneDNN
emulates bf16, which is slower than fp32, so "auto" never picks it there.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "cpu_has_native_bf16", "resolve_precision"]

#: Values accepted by :func:`resolve_precision` besides ``"auto"`` (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this x86 CPU has bf16 instructions (AMX-BF16 or AVX512-BF16), read from ``cpuinfo``'s flags.

    False where the flags cannot be read (non-Linux, non-x86): "auto" then stays in fp32, which is always correct.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in _BF16_CPU_FLAGS)
    return False


def resolve_precision(precision: str | None, accelerator: str = "auto") -> str:
    """Lightning ``precision`` for ``precision`` (``None`` → ``"32-true"``; ``"auto"`` → see the module docstring).

    Args:
        precision: ``"auto"``, ``None`` or one of :data:`PRECISIONS`.
        accelerator: Lightning accelerator the run uses (``"auto"``: CUDA when available, else CPU).

    Raises:
        ValueError: an unknown precision name.
    """
    if precision is None:
        return "32-true"
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
        return precision
    use_cuda = accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return "32-true"
