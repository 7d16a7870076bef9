"""``resolve_precision``: "auto" picks bf16 only where the hardware computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_core.training import precision as prec
from vlp_core.training import resolve_precision

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw amx_bf16 amx_tile amx_int8\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n"


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec.platform, "machine", lambda: "x86_64")


@pytest.mark.parametrize(("text", "native"), [(SAPPHIRE_RAPIDS, True), (AVX512_BF16, True), (SKYLAKE, False)])
def test_cpu_flags(tmp_path: Path, x86: None, text: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert prec.cpu_has_native_bf16(info) is native


def test_unreadable_cpuinfo_and_other_architectures_stay_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec.platform, "machine", lambda: "x86_64")
    assert prec.cpu_has_native_bf16(tmp_path / "missing") is False
    info = tmp_path / "cpuinfo"
    info.write_text(SAPPHIRE_RAPIDS)
    monkeypatch.setattr(prec.platform, "machine", lambda: "arm64")
    assert prec.cpu_has_native_bf16(info) is False


def test_explicit_and_default_values_pass_through() -> None:
    assert resolve_precision(None) == "32-true"
    assert resolve_precision("bf16-mixed") == "bf16-mixed"
    assert resolve_precision("32-true", accelerator="cuda") == "32-true"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("bf16")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = "bf16-mixed" if native else "32-true"
    assert resolve_precision("auto") == expected
    assert resolve_precision("auto", accelerator="cpu") == expected


def test_auto_on_cuda_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", accelerator="gpu") == "32-true"
    # A CPU run on a machine that has a GPU follows the CPU, not the GPU.
    assert resolve_precision("auto", accelerator="cpu") == "32-true"


def test_this_machine_reads_its_own_flags() -> None:
    """On a Linux x86 machine the answer matches /proc/cpuinfo (a regression guard for the flag parsing)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file() or prec.platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs Linux on x86")
    flags = next(line for line in info.read_text().splitlines() if line.startswith("flags")).split()
    assert prec.cpu_has_native_bf16() is ("amx_bf16" in flags or "avx512_bf16" in flags)
