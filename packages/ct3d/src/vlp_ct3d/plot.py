"""PNGs: axial / coronal / sagittal mid-slices of volumes with the true aspect ratio; zero-shot alignment heatmaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_mid_slices", "plot_alignment"]


def plot_mid_slices(
    hu: np.ndarray,
    spacing: Sequence[float],
    out: str | Path,
    title: str = "",
    window: tuple[float, float] = (-1000, 400),
) -> Path:
    """Three mid-slices of a RAS volume ``[R, A, S]`` in HU, displayed radiologically (patient right on the left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sx, sy, sz = (float(s) for s in spacing)
    i, j, k = (n // 2 for n in hu.shape)
    # Radiological convention: patient's right (+x in RAS) on the viewer's left; anterior up; superior up.
    views = [
        ("axial", hu[::-1, :, k].T, sy / sx),
        ("coronal", hu[::-1, j, :].T, sz / sx),
        ("sagittal", hu[i, :, :].T, sz / sy),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, (name, img, aspect) in zip(axes, views):
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", aspect=aspect)
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title[:110] + ("…" if len(title) > 110 else ""), fontsize=8)
    return _save(fig, out)


def plot_alignment(matrices: Mapping[str, Any], classes: Sequence[str], out: str | Path, title: str = "") -> Path:
    """Heatmaps of :func:`vlp_ct3d.eval.zeroshot_alignment`'s ``[C, C]`` cosine matrices side by side, values
    printed in the cells (rows: the first named direction set, columns: the second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short = [c if len(c) <= 12 else c[:11] + "." for c in classes]
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.2))
    for ax, (name, m) in zip(np.atleast_1d(axes), matrices.items()):
        m = np.asarray(m, dtype=float)
        ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
        rows, cols = name.split(" vs ")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(short)), short, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(short)), short, fontsize=7)
        ax.set_xlabel(f"{cols} direction", fontsize=8)
        ax.set_ylabel(f"{rows} direction", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def _save(fig: Any, out: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
