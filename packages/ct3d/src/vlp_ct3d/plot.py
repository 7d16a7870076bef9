"""PNGs of volumes: axial / coronal / sagittal mid-slices with the true aspect ratio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_mid_slices"]


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
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
