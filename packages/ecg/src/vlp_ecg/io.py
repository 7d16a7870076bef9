"""WFDB record reading and writing with by-name lead reordering and strict validation.

Every reader returns the signal in **mV** as ``(leads, samples)`` float32 together with the sampling rate, the
canonical lead names and the header metadata (including header comments). Leads are matched to the canonical
12-lead order (I, II, III, aVR, aVL, aVF, V1-V6) **by name**, case-insensitively, so MIMIC-IV-ECG's ``aVF`` before
``aVL`` file order and PTB Diagnostic's lower-case ``avr`` come out right without index hacks.

Bad input (truncated ``.dat``, header/data length mismatch, NaN samples, flat leads, unknown or missing lead names,
an unexpected sampling rate) raises :class:`ECGBadInputError` naming the record and the problem. Nothing is
silently zero-filled: a missing lead is only zero-filled (with ``lead_mask`` False) when ``missing="zero"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from scipy.signal import resample_poly

from vlp_core.data import CorruptRecordError

__all__ = [
    "STANDARD_LEADS",
    "ECGBadInputError",
    "ECGRecord",
    "canonical_lead_name",
    "read_header",
    "read_record",
    "record_base",
    "write_record",
]

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""The canonical 12-lead order every reader reorders to by name."""

_EXTRA_LEADS = (
    "VX", "VY", "VZ", "X", "Y", "Z", "MLI", "MLII", "MLIII", "V7", "V8", "V9", "V3R", "V4R", "V5R", "V6R",
)  # fmt: skip
_CANONICAL: dict[str, str] = {n.lower(): n for n in STANDARD_LEADS + _EXTRA_LEADS}
# Common spellings seen in PhysioNet/CinC databases.
_CANONICAL.update({"lead i": "I", "lead ii": "II", "lead iii": "III", "d1": "I", "d2": "II", "d3": "III"})

_UNIT_SCALE = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
# Bits per stored sample for the WFDB formats whose size is predictable (FLAC formats 508/516/524 are not).
_FMT_BITS = {
    "8": 8,
    "16": 16,
    "24": 24,
    "32": 32,
    "61": 16,
    "80": 8,
    "160": 16,
    "212": 12,
    "310": 32 / 3,
    "311": 32 / 3,
}


class ECGBadInputError(CorruptRecordError):
    """A WFDB record that cannot be used as asked; the message names the record and the problem."""


def canonical_lead_name(name: str) -> str | None:
    """Map a lead name to its canonical spelling, case-insensitively (``"avr"``/``"AVR"`` -> ``"aVR"``).

    Args:
        name: lead name as written in a WFDB header.

    Returns:
        The canonical name, or ``None`` if the name is not a recognised ECG lead.
    """
    return _CANONICAL.get(str(name).strip().lower())


def record_base(path: str | os.PathLike) -> str:
    """Strip a ``.hea``/``.dat`` suffix so any of ``rec``, ``rec.hea``, ``rec.dat`` names the record."""
    p = str(path)
    for suffix in (".hea", ".dat", ".atr", ".xyz"):
        if p.endswith(suffix):
            return p[: -len(suffix)]
    return p


@dataclass
class ECGRecord:
    """One ECG recording.

    Attributes:
        signal: ``(leads, samples)`` float32 in mV.
        fs: sampling rate in Hz.
        leads: canonical lead names, one per row of ``signal``.
        lead_mask: ``(leads,)`` bool, False for leads that were absent (zero-filled on request) or flat-masked.
        record: record path without suffix (used in error messages; never a patient identifier by itself).
        comments: header comment lines (free text; PTB Diagnostic keeps the clinical record here).
        meta: header metadata (``sig_name`` as written, ``units``, ``fmt``, ``adc_gain``, ``sig_len``,
            ``samps_per_frame``, ``n_segments``, ``base_date``, ``base_time``).
    """

    signal: np.ndarray
    fs: float
    leads: list[str]
    lead_mask: np.ndarray
    record: str
    comments: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.signal.shape[1] / self.fs


def read_header(path: str | os.PathLike) -> wfdb.Record | wfdb.MultiRecord:
    """Read a WFDB header, raising :class:`ECGBadInputError` naming the record on failure."""
    base = record_base(path)
    if not os.path.exists(base + ".hea"):
        raise ECGBadInputError(f"{base}: header file {base}.hea does not exist")
    try:
        return wfdb.rdheader(base)
    except Exception as exc:  # wfdb raises bare ValueError/IndexError on malformed headers
        raise ECGBadInputError(f"{base}: cannot parse WFDB header: {exc}") from exc


def _check_file_sizes(base: str, header: wfdb.Record) -> None:
    """Compare each signal file's size with what the header promises (catches truncated/over-long ``.dat``)."""
    if header.sig_len is None or not header.file_name:
        return
    directory = os.path.dirname(base)
    files: dict[str, list[int]] = {}
    for i, fname in enumerate(header.file_name):
        files.setdefault(fname, []).append(i)
    for fname, idx in files.items():
        fmts = {str(header.fmt[i]) for i in idx}
        if len(fmts) != 1 or next(iter(fmts)) not in _FMT_BITS:
            continue  # mixed or compressed formats: size is not predictable, rely on the post-read length check
        bits = _FMT_BITS[next(iter(fmts))]
        spf = sum(int(header.samps_per_frame[i] or 1) for i in idx)
        offset = int(header.byte_offset[idx[0]] or 0) if header.byte_offset else 0
        expected = offset + math.ceil(header.sig_len * spf * bits / 8)
        fpath = os.path.join(directory, fname)
        if not os.path.exists(fpath):
            raise ECGBadInputError(f"{base}: signal file {fname} named in the header does not exist")
        actual = os.path.getsize(fpath)
        frame_bytes = math.ceil(spf * bits / 8)
        if actual < expected:
            n_have = int((actual - offset) * 8 // (bits * spf))
            raise ECGBadInputError(
                f"{base}: truncated signal file {fname}: header promises {header.sig_len} samples "
                f"({expected} bytes) but the file holds {actual} bytes (~{n_have} samples)"
            )
        if actual > expected + frame_bytes:
            n_have = int((actual - offset) * 8 // (bits * spf))
            raise ECGBadInputError(
                f"{base}: header/data length mismatch in {fname}: header says sig_len={header.sig_len} but the "
                f"file holds ~{n_have} samples ({actual} bytes, expected {expected})"
            )


def _to_mv(sig: np.ndarray, unit: str | None, base: str, name: str) -> np.ndarray:
    key = (unit or "mV").strip().lower()
    if key not in _UNIT_SCALE:
        raise ECGBadInputError(f"{base}: lead {name!r} has unit {unit!r}; expected one of mV, uV, V")
    return sig * _UNIT_SCALE[key]


def read_record(
    path: str | os.PathLike,
    leads: Sequence[str] | None = STANDARD_LEADS,
    *,
    missing: str = "error",
    flat: str = "error",
    expected_fs: float | None = None,
    multifreq: str = "upsample",
    flat_tol: float = 1e-6,
) -> ECGRecord:
    """Read a WFDB record (single- or multi-segment, any sample format wfdb supports) in mV.

    Args:
        path: record path, with or without ``.hea``.
        leads: lead names to return, in this order, matched by name case-insensitively. Default: the canonical
            12 leads. ``None`` returns every channel in file order (names canonicalised where recognised).
        missing: ``"error"`` (default) raises when a requested lead is absent; ``"zero"`` zero-fills it and sets
            its ``lead_mask`` entry False.
        flat: ``"error"`` (default) raises on an all-constant lead; ``"mask"`` keeps it but sets ``lead_mask``
            False; ``"keep"`` accepts it.
        expected_fs: if given, a record at another sampling rate raises (catches a wrong rate in a config).
        multifreq: for multi-frequency records (samples-per-frame > 1): ``"upsample"`` (default) brings every
            channel to the highest per-channel rate by polyphase resampling; ``"frame"`` averages to the frame
            rate (wfdb's ``smooth_frames``).
        flat_tol: peak-to-peak amplitude (mV) at or below which a lead counts as flat.

    Returns:
        :class:`ECGRecord` with ``signal`` ``(len(leads), samples)`` float32 mV.

    Raises:
        ECGBadInputError: naming the record and the problem.
    """
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
    if flat not in ("error", "mask", "keep"):
        raise ValueError(f"flat must be 'error', 'mask' or 'keep', got {flat!r}")
    if multifreq not in ("upsample", "frame"):
        raise ValueError(f"multifreq must be 'upsample' or 'frame', got {multifreq!r}")
    if leads is not None:
        unknown = [n for n in leads if canonical_lead_name(n) is None]
        if unknown:
            raise ValueError(f"unknown lead name(s) {unknown} requested; known: {sorted(set(_CANONICAL.values()))}")
        want = [canonical_lead_name(n) for n in leads]
    base = record_base(path)
    header = read_header(base)
    is_multi = isinstance(header, wfdb.MultiRecord)
    if is_multi:
        for seg, seg_len in zip(header.seg_name, header.seg_len):
            if seg == "~":
                continue
            seg_header = read_header(os.path.join(os.path.dirname(base), seg))
            _check_file_sizes(os.path.join(os.path.dirname(base), seg), seg_header)
            if seg_header.sig_len != seg_len:
                raise ECGBadInputError(
                    f"{base}: segment {seg} has {seg_header.sig_len} samples but the master header says {seg_len}"
                )
    else:
        _check_file_sizes(base, header)
    spf = [int(s or 1) for s in (getattr(header, "samps_per_frame", None) or [])] or [1]
    upsample = (not is_multi) and multifreq == "upsample" and max(spf) > 1
    try:
        rec = wfdb.rdrecord(base, physical=True, smooth_frames=not upsample, m2s=True)
    except Exception as exc:
        raise ECGBadInputError(f"{base}: wfdb could not read the samples: {exc}") from exc
    fs = float(rec.fs)
    if upsample:
        top = max(spf)
        chans = []
        for sig, s in zip(rec.e_p_signal, spf):
            chans.append(resample_poly(sig, top // s, 1) if top % s == 0 else resample_poly(sig, top, s))
        n = min(len(c) for c in chans)
        signal = np.stack([c[:n] for c in chans], 0)
        expected_len = (header.sig_len or n) * top
        fs = fs * top
    else:
        signal = np.asarray(rec.p_signal, dtype=np.float64).T
        expected_len = header.sig_len if header.sig_len else signal.shape[1]
        if max(spf) > 1 and not is_multi:
            expected_len = header.sig_len
    if signal.shape[1] != expected_len:
        raise ECGBadInputError(
            f"{base}: header/data length mismatch: header says {expected_len} samples, read {signal.shape[1]}"
        )
    if expected_fs is not None and not math.isclose(fs, float(expected_fs), rel_tol=1e-6):
        raise ECGBadInputError(f"{base}: sampling rate is {fs:g} Hz but the configuration expects {expected_fs:g} Hz")
    file_names = list(rec.sig_name or [])
    canon = [canonical_lead_name(n) for n in file_names]
    units = list(rec.units or [None] * len(file_names))
    if leads is None:
        order = list(range(len(file_names)))
        out_names = [c if c is not None else n for c, n in zip(canon, file_names)]
    else:
        seen: dict[str, int] = {}
        for i, c in enumerate(canon):
            if c is None:
                continue
            if c in seen:
                raise ECGBadInputError(
                    f"{base}: lead {c} appears twice (as {file_names[seen[c]]!r} and {file_names[i]!r})"
                )
            seen[c] = i
        absent = [w for w in want if w not in seen]
        if absent and missing == "error":
            unknown_in_file = [n for n, c in zip(file_names, canon) if c is None]
            hint = f"; unrecognised lead names in the file: {unknown_in_file}" if unknown_in_file else ""
            raise ECGBadInputError(f"{base}: missing lead(s) {absent} (file has {file_names}){hint}")
        order = [seen.get(w, -1) for w in want]
        out_names = list(want)
    out = np.zeros((len(order), signal.shape[1]), dtype=np.float32)
    mask = np.zeros(len(order), dtype=bool)
    for row, i in enumerate(order):
        if i < 0:
            continue  # zero-filled on explicit request (missing="zero"); lead_mask stays False
        sig = signal[i]
        name = out_names[row]
        n_nan = int(np.isnan(sig).sum())
        if n_nan:
            raise ECGBadInputError(f"{base}: lead {name} has {n_nan} NaN samples (of {sig.size})")
        sig = _to_mv(sig, units[i], base, name)
        mask[row] = True
        if sig.size and float(np.ptp(sig)) <= flat_tol:
            if flat == "error":
                raise ECGBadInputError(f"{base}: lead {name} is flat (constant {float(sig[0]):.4g} mV)")
            if flat == "mask":
                mask[row] = False
        out[row] = sig
    meta = {
        "sig_name": file_names,
        "units": units,
        "fmt": list(getattr(header, "fmt", None) or []),
        "adc_gain": list(getattr(rec, "adc_gain", None) or []),
        "sig_len": header.sig_len,
        "samps_per_frame": spf,
        "n_segments": len(header.seg_name) if is_multi else 1,
        "base_date": str(rec.base_date) if rec.base_date is not None else None,
        "base_time": str(rec.base_time) if rec.base_time is not None else None,
    }
    comments = list(rec.comments or header.comments or [])
    return ECGRecord(out, fs, out_names, mask, base, comments, meta)


def write_record(
    path: str | os.PathLike,
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    *,
    comments: Sequence[str] | None = None,
    fmt: str = "16",
    adc_gain: float | None = None,
) -> Path:
    """Write ``signal`` (``(leads, samples)`` mV) as a WFDB record (``.hea`` + ``.dat``).

    Args:
        path: record path without suffix; the parent folder is created.
        signal: ``(C, T)`` array in mV.
        fs: sampling rate (Hz).
        leads: lead names as they should appear in the header (any case).
        comments: header comment lines.
        fmt: WFDB storage format, ``"16"`` (PTB-XL/MIMIC, 1 uV/LSB) or ``"212"`` (MIT-BIH, 5 uV/LSB).
        adc_gain: ADC units per mV; default 1000 for format 16, 200 for format 212.

    Returns:
        The record path (without suffix).
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 2 or signal.shape[0] != len(leads):
        raise ValueError(f"signal must be (leads, samples) with {len(leads)} leads, got {signal.shape}")
    if not np.isfinite(signal).all():
        raise ValueError(f"{path}: refusing to write non-finite samples")
    gain = float(adc_gain if adc_gain is not None else (1000.0 if fmt == "16" else 200.0))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = signal.shape[0]
    if fmt == "16":
        # Direct writer (same bytes and header fields as wfdb.wrsamp, ~50x faster: wrsamp's header code is slow).
        digital = np.round(signal * gain)
        if np.abs(digital).max(initial=0) > 32767:
            raise ValueError(f"{path}: amplitude exceeds the format-16 range at gain {gain:g} adu/mV")
        d = digital.astype(np.int16)
        d.T.astype("<i2").tofile(f"{p}.dat")
        checks = [int(c) for c in d.astype(np.int64).sum(1) % 65536]  # wfdb's (unsigned) checksum convention
        lines = [f"{p.name} {n} {fs:g} {signal.shape[1]}"]
        for i, name in enumerate(leads):
            init = int(d[i, 0]) if d.shape[1] else 0
            lines.append(f"{p.name}.dat 16 {gain:g}(0)/mV 16 0 {init} {checks[i]} 0 {name}")
        lines += [f"# {c}" for c in (comments or [])]
        Path(f"{p}.hea").write_text("\n".join(lines) + "\n")
        return p
    wfdb.wrsamp(
        p.name,
        fs=fs,
        units=["mV"] * n,
        sig_name=list(leads),
        p_signal=signal.T,
        fmt=[fmt] * n,
        adc_gain=[gain] * n,
        baseline=[0] * n,
        comments=list(comments or []),
        write_dir=str(p.parent),
    )
    return p
