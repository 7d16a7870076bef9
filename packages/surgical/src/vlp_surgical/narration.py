"""Narration corpus schema (CSV/Parquet), validated on load, and the video → phase → clip hierarchy.

One table, one row per text:

==============  ========  ==========================================================================================
column          type      meaning
==============  ========  ==========================================================================================
``video_id``    str       the video the text belongs to
``id``          str       unique row id
``level``       str       ``clip`` (a narration sentence), ``phase`` (a phase/keystep summary) or ``video`` (abstract)
``start``       float     start time in seconds (``video`` rows: usually 0)
``end``         float     end time in seconds, ``>= start``
``text``        str       non-empty text
``parent_id``   str       id of the enclosing row: a ``clip``'s phase, a ``phase``'s video row; empty for ``video``
                          rows and for clips/phases without a parent (allowed; they then only serve their own level)
==============  ========  ==========================================================================================

Checks (each error names the file and the 1-based data row): required columns, types, ``end >= start``, known level,
unique ids, parent exists, same video, the parent's level is the next coarser one, the child lies within its parent
(tolerance ``slack`` s), and phases of one video do not overlap. With ``skip_bad=True`` bad rows (and rows whose
parent was skipped) are dropped and counted instead (:class:`vlp_core.data.SkipPolicy`).

Children keep their temporal order (sorted by ``start``, then ``end``, then file order) — never shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vlp_core.data import SkipPolicy
from vlp_core.data.errors import InvalidValueError, MissingColumnError, UnsupportedFormatError

__all__ = ["COLUMNS", "LEVELS", "Clip", "NarrationError", "Narrations", "Phase", "Video", "read_narrations"]

COLUMNS = ("video_id", "id", "level", "start", "end", "text", "parent_id")
LEVELS = ("clip", "phase", "video")
_PARENT_LEVEL = {"clip": "phase", "phase": "video"}


class NarrationError(InvalidValueError):
    """A narration row breaks the schema; the message names the file and the row."""


@dataclass
class Clip:
    id: str
    start: float
    end: float
    text: str


@dataclass
class Phase:
    id: str
    start: float
    end: float
    text: str
    clips: list[Clip] = field(default_factory=list)


@dataclass
class Video:
    video_id: str
    abstract: str | None
    start: float
    end: float
    phases: list[Phase] = field(default_factory=list)
    orphan_clips: list[Clip] = field(default_factory=list)


def _load_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such narration file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype={"video_id": str, "id": str, "parent_id": str, "level": str, "text": str},
                           keep_default_na=False)  # fmt: skip
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise UnsupportedFormatError(f"{path}: narration tables are .csv or .parquet, got {suffix!r}")


class Narrations:
    """A validated narration table and its hierarchy.

    Args:
        table: the rows (see the module docstring for the schema).
        source: file name used in error messages.
        skip_bad: drop and count bad rows instead of raising.
        slack: tolerance (s) for a child sticking out of its parent.
    """

    def __init__(self, table: pd.DataFrame, source: str = "<table>", skip_bad: bool = False, slack: float = 0.5):
        self.source = source
        self.policy = SkipPolicy(skip_bad=skip_bad)
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise MissingColumnError(f"{source}: missing narration columns {missing}; required {list(COLUMNS)}")
        df = table.loc[:, list(COLUMNS)].copy().reset_index(drop=True)
        df["row"] = np.arange(len(df)) + 1
        for c in ("video_id", "id", "level", "text", "parent_id"):
            df[c] = df[c].fillna("").astype(str).str.strip()
        df["start"] = pd.to_numeric(df["start"], errors="coerce")
        df["end"] = pd.to_numeric(df["end"], errors="coerce")
        keep = np.ones(len(df), dtype=bool)

        def bad(i: int, msg: str) -> None:
            err = NarrationError(f"{source}, row {int(df['row'].iat[i])} (id {df['id'].iat[i]!r}): {msg}")
            self.policy.handle(f"{source}:row{int(df['row'].iat[i])}", err)
            keep[i] = False

        seen: set[str] = set()
        for i in range(len(df)):
            r = df.iloc[i]
            if not r["id"] or not r["video_id"]:
                bad(i, "empty id or video_id")
            elif r["id"] in seen:
                bad(i, "duplicate id")
            elif r["level"] not in LEVELS:
                bad(i, f"unknown level {r['level']!r}; choose from {list(LEVELS)}")
            elif not np.isfinite(r["start"]) or not np.isfinite(r["end"]):
                bad(i, "start/end are not numbers")
            elif r["end"] < r["start"]:
                bad(i, f"end {r['end']} < start {r['start']}")
            elif r["start"] < 0:
                bad(i, f"negative start {r['start']}")
            elif not r["text"]:
                bad(i, "empty text")
            seen.add(r["id"])
        # Parents: processed coarse to fine so a skipped parent drops its children.
        by_id = {df["id"].iat[i]: i for i in range(len(df)) if keep[i]}
        for level in ("phase", "clip"):
            for i in np.flatnonzero(keep & (df["level"] == level).to_numpy()):
                pid = df["parent_id"].iat[i]
                if not pid:
                    continue
                j = by_id.get(pid)
                if j is None or not keep[j]:
                    bad(i, f"parent {pid!r} does not exist (or was skipped)")
                elif df["level"].iat[j] != _PARENT_LEVEL[level]:
                    bad(i, f"parent {pid!r} is a {df['level'].iat[j]!r} row; a {level} needs a {_PARENT_LEVEL[level]}")
                elif df["video_id"].iat[j] != df["video_id"].iat[i]:
                    bad(i, f"parent {pid!r} belongs to another video ({df['video_id'].iat[j]!r})")
                elif df["start"].iat[i] < df["start"].iat[j] - slack or df["end"].iat[i] > df["end"].iat[j] + slack:
                    bad(i, f"[{df['start'].iat[i]:g}, {df['end'].iat[i]:g}] s lies outside its parent {pid!r} "
                           f"[{df['start'].iat[j]:g}, {df['end'].iat[j]:g}] s")  # fmt: skip
        # Overlapping phases within a video (a clip would then have two plausible parents).
        ph = df[keep & (df["level"] == "phase").to_numpy()].sort_values(["video_id", "start", "end", "row"])
        for _, g in ph.groupby("video_id", sort=False):
            prev_end, prev_id = -np.inf, None
            for i, r in g.iterrows():
                if r["start"] < prev_end - 1e-9:
                    bad(int(i), f"phase overlaps the previous phase {prev_id!r} (ends at {prev_end:g} s)")
                    continue
                prev_end, prev_id = r["end"], r["id"]
        # Children of dropped phases go too.
        dropped = set(df["id"][~keep])
        for i in np.flatnonzero(keep & df["parent_id"].isin(dropped).to_numpy()):
            bad(int(i), f"its parent {df['parent_id'].iat[i]!r} was skipped")
        self.table = df[keep].reset_index(drop=True)
        self._build()

    def _build(self) -> None:
        df = self.table.sort_values(["video_id", "start", "end", "row"], kind="stable")
        self.videos: dict[str, Video] = {}
        phases: dict[str, Phase] = {}
        for vid, g in df.groupby("video_id", sort=True):
            vrows = g[g["level"] == "video"]
            abstract = " ".join(vrows["text"]) if len(vrows) else None
            video = Video(str(vid), abstract, float(g["start"].min()), float(g["end"].max()))
            for _, r in g[g["level"] == "phase"].iterrows():
                p = Phase(r["id"], float(r["start"]), float(r["end"]), r["text"])
                phases[r["id"]] = p
                video.phases.append(p)
            for _, r in g[g["level"] == "clip"].iterrows():
                c = Clip(r["id"], float(r["start"]), float(r["end"]), r["text"])
                (phases[r["parent_id"]].clips if r["parent_id"] in phases else video.orphan_clips).append(c)
            self.videos[str(vid)] = video

    def __len__(self) -> int:
        return len(self.videos)

    def video_ids(self) -> list[str]:
        return list(self.videos)

    def clips(self) -> list[tuple[str, Clip]]:
        """Every clip narration as ``(video_id, clip)``, in temporal order per video."""
        out = []
        for vid, v in self.videos.items():
            out += [(vid, c) for p in v.phases for c in p.clips] + [(vid, c) for c in v.orphan_clips]
        return out


def read_narrations(path: str | Path, skip_bad: bool = False, slack: float = 0.5) -> Narrations:
    """Load and validate a narration CSV/Parquet (see the module docstring for the schema)."""
    path = Path(path)
    return Narrations(_load_table(path), source=str(path), skip_bad=skip_bad, slack=slack)
