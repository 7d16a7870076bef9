"""Phase annotation loaders for Cholec80 and AutoLaparo (task 1), standard splits, explicit frame-index base.

Cholec80 (``phase_annotations/videoNN-phase.txt``): tab-separated with a ``Frame\\tPhase`` header, one row per frame
at 25 fps starting at frame 0, phase *names*. Tool files (``tool_annotations/videoNN-tool.txt``): ``Frame`` plus seven
0/1 tool columns at 1 fps (every 25th frame).

AutoLaparo task 1 (``labels/label_NN.txt``): tab-separated ``Frame\\tPhase`` at 1 fps, 1-based frames, phase ids 1–7.

Every loader returns a DataFrame with ``frame`` (as in the file), ``time`` (seconds, from the frame index, the frame
rate and ``frame_index_base``), ``phase`` (name) and ``label`` (0-based class index), and names the file and line
of any bad row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlp_core.data.errors import InvalidValueError, ManifestError

__all__ = [
    "AUTOLAPARO_PHASES",
    "CHOLEC80_PHASES",
    "CHOLEC80_TOOLS",
    "AnnotationError",
    "autolaparo_split",
    "cholec80_split",
    "labels_at",
    "read_autolaparo_phases",
    "read_cholec80_phases",
    "read_cholec80_tools",
]

CHOLEC80_PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
CHOLEC80_TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
AUTOLAPARO_PHASES = (
    "Preparation",
    "Dividing Ligament and Peritoneum",
    "Dividing Uterine Vessels and Ligament",
    "Transecting the Vagina",
    "Specimen Removal",
    "Suturing",
    "Washing",
)

_SPLITS = {
    "cholec80": {"train": range(1, 41), "val": range(41, 49), "test": range(49, 81)},
    "autolaparo": {"train": range(1, 11), "val": range(11, 15), "test": range(15, 22)},
}


class AnnotationError(InvalidValueError):
    """A phase/tool annotation file is malformed; the message names the file and the line."""


def cholec80_split(split: str) -> list[str]:
    """Video ids (``"video01"``…) of the standard 40/8/32 split: ``train`` 1–40, ``val`` 41–48, ``test`` 49–80."""
    return [f"video{i:02d}" for i in _split("cholec80", split)]


def autolaparo_split(split: str) -> list[str]:
    """Video ids (``"01"``…) of the standard split: ``train`` 1–10, ``val`` 11–14, ``test`` 15–21."""
    return [f"{i:02d}" for i in _split("autolaparo", split)]


def _split(dataset: str, split: str) -> range:
    if split not in _SPLITS[dataset]:
        raise ValueError(f"unknown {dataset} split {split!r}; choose from {sorted(_SPLITS[dataset])}")
    return _SPLITS[dataset][split]


def _read_table(path: str | Path, expected: tuple[str, ...] | None) -> tuple[pd.DataFrame, int]:
    """Tab-separated table with a header row; returns it and the file line number of its first data row."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such annotation file")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not a tab-separated table ({exc})") from exc
    df.columns = [c.strip() for c in df.columns]
    if expected is not None and tuple(df.columns[: len(expected)]) != expected:
        want, got = "<TAB>".join(expected), "<TAB>".join(df.columns)
        raise AnnotationError(f"{path}: expected header {want!r}, got {got!r}")
    return df, 2


def _frames(df: pd.DataFrame, path: Path, first_line: int) -> np.ndarray:
    frames = pd.to_numeric(df["Frame"].str.strip(), errors="coerce")
    bad = frames.isna() | (frames % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise AnnotationError(f"{path}, line {i + first_line}: frame {df['Frame'].iloc[i]!r} is not an integer")
    frames = frames.to_numpy().astype(np.int64)
    dec = np.flatnonzero(np.diff(frames) <= 0)
    if dec.size:
        i = int(dec[0]) + 1
        raise AnnotationError(
            f"{path}, line {i + first_line}: frame {frames[i]} does not increase (previous {frames[i - 1]})"
        )
    return frames


def _check_end(frames: np.ndarray, n_frames: int | None, base: int, path: Path, first_line: int) -> None:
    if n_frames is None:
        return
    past = np.flatnonzero(frames - base >= n_frames)
    if past.size:
        i = int(past[0])
        raise AnnotationError(
            f"{path}, line {i + first_line}: frame {frames[i]} is past the end of the video ({n_frames} frames, "
            f"index base {base})"
        )


def read_cholec80_phases(
    path: str | Path,
    fps: float = 25.0,
    frame_index_base: int = 0,
    sample_fps: float | None = 1.0,
    n_frames: int | None = None,
    phases: tuple[str, ...] = CHOLEC80_PHASES,
) -> pd.DataFrame:
    """Read a Cholec80 ``videoNN-phase.txt``.

    Args:
        path: the file.
        fps: frame rate of the ``Frame`` column (25 for Cholec80).
        frame_index_base: index of the video's first frame in the file (0 for Cholec80).
        sample_fps: keep only rows on this rate's grid (1 fps = every 25th frame, the usual protocol); ``None``
            keeps every row.
        n_frames: frames in the video (rows past it are an error), when known.
        phases: the phase vocabulary (unknown names are an error).

    Returns:
        DataFrame ``frame, time, phase, label``.
    """
    path = Path(path)
    df, first = _read_table(path, ("Frame", "Phase"))
    frames = _frames(df, path, first)
    names = df["Phase"].str.strip()
    lookup = {p: i for i, p in enumerate(phases)}
    unknown = ~names.isin(list(lookup))
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise AnnotationError(f"{path}, line {i + first}: unknown phase {names.iloc[i]!r}; known: {list(phases)}")
    _check_end(frames, n_frames, frame_index_base, path, first)
    out = pd.DataFrame({"frame": frames, "time": (frames - frame_index_base) / fps, "phase": names.to_numpy(),
                        "label": names.map(lookup).to_numpy().astype(np.int64)})  # fmt: skip
    if sample_fps is not None:
        step = fps / sample_fps
        if abs(step - round(step)) > 1e-9:
            raise ValueError(f"sample_fps={sample_fps} does not divide the annotation rate {fps}")
        out = out[(out["frame"] - frame_index_base) % round(step) == 0].reset_index(drop=True)
    return out


def read_cholec80_tools(path: str | Path, fps: float = 25.0, frame_index_base: int = 0) -> pd.DataFrame:
    """Read a Cholec80 ``videoNN-tool.txt``: ``frame, time`` plus one 0/1 column per tool."""
    path = Path(path)
    df, first = _read_table(path, ("Frame", *CHOLEC80_TOOLS))
    frames = _frames(df, path, first)
    out = pd.DataFrame({"frame": frames, "time": (frames - frame_index_base) / fps})
    for tool in CHOLEC80_TOOLS:
        v = pd.to_numeric(df[tool].str.strip(), errors="coerce")
        bad = ~v.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise AnnotationError(f"{path}, line {i + first}: {tool} must be 0 or 1, got {df[tool].iloc[i]!r}")
        out[tool] = v.to_numpy().astype(np.int64)
    return out


def read_autolaparo_phases(
    path: str | Path,
    fps: float = 1.0,
    frame_index_base: int = 1,
    n_frames: int | None = None,
    phases: tuple[str, ...] = AUTOLAPARO_PHASES,
) -> pd.DataFrame:
    """Read an AutoLaparo task-1 label file (``Frame\\tPhase``, 1 fps, 1-based frames, phase ids 1–7).

    Returns:
        DataFrame ``frame, time, phase, label`` (``label`` = id − 1).
    """
    path = Path(path)
    df, first = _read_table(path, ("Frame", "Phase"))
    frames = _frames(df, path, first)
    ids = pd.to_numeric(df["Phase"].str.strip(), errors="coerce")
    bad = ~ids.isin(list(range(1, len(phases) + 1)))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise AnnotationError(f"{path}, line {i + first}: phase id {df['Phase'].iloc[i]!r} is not in 1..{len(phases)}")
    _check_end(frames, n_frames, frame_index_base, path, first)
    label = ids.to_numpy().astype(np.int64) - 1
    return pd.DataFrame({"frame": frames, "time": (frames - frame_index_base) / fps,
                         "phase": [phases[k] for k in label], "label": label})  # fmt: skip


def labels_at(ann: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """Label shown at each time (the last annotated row at or before it)."""
    t = ann["time"].to_numpy()
    idx = np.searchsorted(t, np.asarray(times) + 1e-6, side="right") - 1
    if (idx < 0).any():
        raise ValueError(f"times before the first annotation ({t[0]:.3f} s)")
    return ann["label"].to_numpy()[idx]
