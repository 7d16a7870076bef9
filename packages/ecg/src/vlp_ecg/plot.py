"""Standard 12-lead ECG plot (3 x 4 layout + lead II rhythm strip on ECG paper) with its report."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlp_ecg.io import STANDARD_LEADS

__all__ = ["LAYOUT_3X4", "plot_12lead", "plot_record"]

LAYOUT_3X4: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)


def plot_12lead(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str] = STANDARD_LEADS,
    title: str = "",
    report: str = "",
    out: str | os.PathLike | None = None,
    rhythm_lead: str = "II",
) -> Path | None:
    """Plot a 12-lead ECG in the standard 3 x 4 layout (2.5 s per column, consecutive in time) plus a rhythm strip.

    Args:
        signal: ``(12, T)`` mV.
        fs: sampling rate (Hz).
        leads: names of the rows of ``signal`` (any order; looked up by name).
        title: figure title.
        report: report text shown under the title.
        out: PNG path (``None`` returns nothing and leaves the figure open).
        rhythm_lead: lead of the bottom rhythm strip.

    Returns:
        The PNG path when ``out`` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(signal, dtype=np.float64)
    pos = {name: i for i, name in enumerate(leads)}
    missing = [n for row in LAYOUT_3X4 for n in row if n not in pos]
    if missing:
        raise ValueError(f"plot_12lead needs leads {missing} (have {list(leads)})")
    total = min(x.shape[1] / fs, 10.0)
    col_dur = total / 4
    spacing = 3.0  # mV between rows
    fig, ax = plt.subplots(figsize=(14, 8.5))
    # ECG paper: minor 0.04 s / 0.1 mV, major 0.2 s / 0.5 mV.
    ymin, ymax = -spacing * 3.6, spacing * 0.6
    for t in np.arange(0, total + 1e-9, 0.04):
        ax.axvline(t, color="#f4c7c7" if round(t / 0.04) % 5 else "#e58a8a", lw=0.3 if round(t / 0.04) % 5 else 0.7)
    for v in np.arange(np.floor(ymin), ymax + 1e-9, 0.1):
        major = abs(round(v * 10) % 5) == 0
        ax.axhline(v, color="#e58a8a" if major else "#f4c7c7", lw=0.7 if major else 0.3)
    for r, row in enumerate(LAYOUT_3X4):
        base = -spacing * r
        for c, name in enumerate(row):
            s, e = int(c * col_dur * fs), int((c + 1) * col_dur * fs)
            seg = x[pos[name], s:e]
            t = np.arange(s, s + len(seg)) / fs
            ax.plot(t, seg - np.median(seg) + base, color="k", lw=0.8)
            ax.text(c * col_dur + 0.05, base + 0.9, name, fontsize=11, weight="bold")
            if c:
                ax.plot([c * col_dur] * 2, [base - 0.5, base + 0.5], color="k", lw=1.2)
    strip = x[pos[rhythm_lead], : int(total * fs)]
    ax.plot(np.arange(len(strip)) / fs, strip - np.median(strip) - spacing * 3, color="k", lw=0.8)
    ax.text(0.05, -spacing * 3 + 0.9, rhythm_lead, fontsize=11, weight="bold")
    ax.set_xlim(0, total)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("time (s)  [25 mm/s equivalent grid: 0.2 s, 0.5 mV major squares]")
    ax.set_yticks([])
    wrapped = "\n".join(textwrap.wrap(report, 150)) if report else ""
    ax.set_title(f"{title}\n{wrapped}".strip(), fontsize=10, loc="left")
    fig.tight_layout()
    if out is None:
        return None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_record(record: str, out: str | os.PathLike, report: str | None = None) -> Path:
    """Read a WFDB record (12 standard leads, by name) and plot it; the report defaults to the header comments."""
    from vlp_ecg.io import read_record

    rec = read_record(record)
    text = report if report is not None else " ".join(rec.comments)
    path = plot_12lead(rec.signal, rec.fs, rec.leads, title=f"{Path(rec.record).name}  ({rec.fs:g} Hz)",
                       report=text, out=out)  # fmt: skip
    assert path is not None
    return path
