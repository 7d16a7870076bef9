"""Indexers (MIMIC-CXR, CheXpert, IU X-ray/OpenI, generic manifest) and the image-report dataset.

Every indexer returns a DataFrame with one row per image and the columns ``key`` (loggable record key, never a
patient identifier), ``path`` (image file), ``text`` (training report text or ``None``), ``split``, ``patient``
(used only for patient-level splits; never logged), ``view`` and one float column per label (``1``/``0``, ``NaN`` =
ignored). Label columns are listed in ``frame.attrs["labels"]``; dropped and skipped rows are counted in
``frame.attrs["report"]``.

CheXpert-labeler values: ``1`` positive, ``0`` negative, ``-1`` uncertain, blank not mentioned. Blank becomes 0
(the CheXpert convention), ``-1`` follows ``uncertain``: ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros) or
``"ignore"`` (NaN: excluded from losses and metrics). Any other value is an error naming file, column and row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlp_core.data import (
    BadInputError,
    InvalidValueError,
    MissingColumnError,
    SkipPolicy,
    patient_split_labels,
    read_manifest,
)
from vlp_core.text import text_ids
from vlp_medical.io import read_image
from vlp_medical.reports import report_text, split_sentences
from vlp_medical.transforms import CxrTransform

__all__ = [
    "CHEXPERT_LABELS",
    "UNCERTAINTY_POLICIES",
    "CxrTextDataset",
    "chexpert_index",
    "collate_cxr",
    "report_sentences",
    "iu_xray_index",
    "manifest_index",
    "mimic_cxr_index",
    "parse_labels",
]

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)  # fmt: skip
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")


def _find(root: Path, *names: str) -> Path:
    for name in names:
        for cand in (root / name, root / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise FileNotFoundError(f"{root}: none of {list(names)} (or .gz) found")


def parse_labels(
    frame: pd.DataFrame, columns: Sequence[str], source: str, uncertain: str = "ignore", blank: float = 0.0
) -> pd.DataFrame:
    """Validate CheXpert-labeler columns and apply the uncertainty policy.

    Args:
        frame: table holding ``columns``.
        columns: label columns (all must exist).
        source: file name used in error messages.
        uncertain: ``"ones"``, ``"zeros"`` or ``"ignore"`` for ``-1``.
        blank: value of a blank cell (0 = CheXpert convention; ``float("nan")`` to ignore).

    Returns:
        float32 DataFrame with the same index and columns.
    """
    if uncertain not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAINTY_POLICIES}, got {uncertain!r}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnError(f"{source}: missing label column(s) {missing} (found {list(frame.columns)})")
    out = {}
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = ~(values.isna() | values.isin([1, 0, -1])) | (
            values.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        )
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InvalidValueError(
                f"{source}: column {col!r} row {row}: value {frame[col].iloc[row]!r} is not one of 1, 0, -1 or blank"
            )
        v = values.astype(float).fillna(blank)
        v = v.replace(-1.0, {"ones": 1.0, "zeros": 0.0, "ignore": math.nan}[uncertain])
        out[col] = v.astype(np.float32)
    return pd.DataFrame(out, index=frame.index)


def _finish(rows: pd.DataFrame, labels: Sequence[str], report: dict[str, Any]) -> pd.DataFrame:
    rows = rows.reset_index(drop=True)
    rows.attrs["labels"] = list(labels)
    rows.attrs["report"] = report
    return rows


def mimic_cxr_index(
    root: str | Path,
    views: Sequence[str] | None = ("PA", "AP"),
    sections: tuple[str, ...] = ("findings", "impression"),
    uncertain: str = "ignore",
    image_suffix: str = ".dcm",
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Index a MIMIC-CXR tree (v2.0.0 layout).

    Expects ``mimic-cxr-2.0.0-metadata.csv`` (``dicom_id, subject_id, study_id, ViewPosition``),
    ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, split``), optionally ``mimic-cxr-2.0.0-chexpert.csv``
    (``subject_id, study_id`` + 14 labels), study reports ``files/p1x/p<subject>/s<study>.txt`` and images
    ``files/p1x/p<subject>/s<study>/<dicom_id><image_suffix>`` (``.jpg`` for MIMIC-CXR-JPG).

    Args:
        root: dataset folder.
        views: keep these ``ViewPosition`` values (others are dropped and counted as ``wrong_view``); ``None`` = all.
        sections: report sections forming the text (a report with none is bad input).
        uncertain: CheXpert uncertainty policy.
        image_suffix: image file suffix.
        skip_bad: count and skip bad rows (missing report/section/image) instead of raising.
    """
    root = Path(root)
    meta_path = _find(root, "mimic-cxr-2.0.0-metadata.csv")
    meta = read_manifest(meta_path, {"dicom_id": str, "subject_id": int, "study_id": int, "ViewPosition": object})
    split = read_manifest(_find(root, "mimic-cxr-2.0.0-split.csv"), {"dicom_id": str, "split": str})
    frame = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    if frame["split"].isna().any():
        row = int(np.flatnonzero(frame["split"].isna().to_numpy())[0])
        raise InvalidValueError(f"{meta_path.name}: row {row}: dicom_id has no entry in the split file")
    report: dict[str, Any] = {"rows": len(frame), "wrong_view": 0}
    frame["ViewPosition"] = frame["ViewPosition"].fillna("").astype(str).str.upper()
    if views is not None:
        keep = frame["ViewPosition"].isin([v.upper() for v in views])
        report["wrong_view"] = int((~keep).sum())
        frame = frame[keep]
    labels: list[str] = []
    try:
        chex_path = _find(root, "mimic-cxr-2.0.0-chexpert.csv")
    except FileNotFoundError:
        chex_path = None
    if chex_path is not None:
        chex = read_manifest(chex_path, {"subject_id": int, "study_id": int})
        labels = [c for c in CHEXPERT_LABELS if c in chex.columns]
        parsed = parse_labels(chex, labels, chex_path.name, uncertain)
        chex = pd.concat([chex[["subject_id", "study_id"]], parsed], axis=1)
        frame = frame.merge(chex, on=["subject_id", "study_id"], how="left")
        frame[labels] = frame[labels].fillna(0.0)  # a study absent from the labeler output mentions nothing
    policy = SkipPolicy(skip_bad=skip_bad, catch=(BadInputError, OSError), name="MIMIC-CXR rows")
    out_rows = []
    texts: dict[tuple[int, int], str] = {}
    for i, row in enumerate(frame.itertuples(index=False)):
        sub, study = int(row.subject_id), int(row.study_id)
        folder = root / "files" / f"p{str(sub)[:2]}" / f"p{sub}"
        key = f"{row.dicom_id}"
        with policy.guard(f"row {i} ({key})") as g:
            if (sub, study) not in texts:
                rpath = folder / f"s{study}.txt"
                if not rpath.is_file():
                    raise FileNotFoundError(f"report {rpath.relative_to(root)} not found")
                texts[(sub, study)] = report_text(rpath.read_text(), sections, source=str(rpath.relative_to(root)))
            ipath = folder / f"s{study}" / f"{row.dicom_id}{image_suffix}"
            if not ipath.is_file():
                raise FileNotFoundError(f"image {ipath.relative_to(root)} not found")
        if g.skipped:
            continue
        rec = {"key": key, "path": str(ipath), "text": texts[(sub, study)], "split": str(row.split),
               "patient": sub, "study": study, "view": row.ViewPosition}  # fmt: skip
        out_rows.append(rec)
    if labels:  # label names contain spaces (itertuples renames them): attach by dicom_id
        by_key = dict(zip(frame["dicom_id"].astype(str), frame[labels].to_numpy(dtype=np.float32)))
        for rec in out_rows:
            rec.update(dict(zip(labels, by_key[rec["key"]])))
    report["skipped"] = policy.report()
    result = pd.DataFrame(out_rows, columns=["key", "path", "text", "split", "patient", "study", "view", *labels])
    return _finish(result, labels, report)


def chexpert_index(
    root: str | Path, split: str = "train", uncertain: str = "ones", frontal_only: bool = True
) -> pd.DataFrame:
    """Index CheXpert (``train.csv``/``valid.csv``; ``Path`` relative to the folder that holds the dataset folder).

    Args:
        root: dataset folder (the one holding ``train.csv``).
        split: ``"train"`` or ``"valid"``.
        uncertain: ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros) or ``"ignore"``.
        frontal_only: keep ``Frontal/Lateral == "Frontal"`` rows (others counted as ``wrong_view``).
    """
    root = Path(root)
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    path = _find(root, f"{split}.csv")
    frame = read_manifest(path, {"Path": str, "Frontal/Lateral": str})
    labels = list(CHEXPERT_LABELS)
    parsed = parse_labels(frame, labels, path.name, uncertain)
    report: dict[str, Any] = {"rows": len(frame), "wrong_view": 0}
    if frontal_only:
        keep = frame["Frontal/Lateral"].str.strip().str.lower() == "frontal"
        report["wrong_view"] = int((~keep).sum())
        frame, parsed = frame[keep], parsed[keep]
    rel = frame["Path"].str.replace("\\", "/", regex=False)
    # "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg": the first component is the dataset folder.
    paths = [str(root / p.split("/", 1)[1]) if p.split("/", 1)[0] == root.name else str(root / p) for p in rel]
    out = pd.DataFrame({
        "key": [f"{split}/{i}" for i in range(len(frame))], "path": paths, "text": None, "split": split,
        "patient": rel.str.extract(r"(patient\d+)")[0].to_numpy(),
        "view": frame.get("AP/PA", pd.Series([""] * len(frame), index=frame.index)).fillna("").to_numpy(),
    })  # fmt: skip
    out = pd.concat([out, parsed.reset_index(drop=True)], axis=1)
    return _finish(out, labels, report)


def iu_xray_index(
    root: str | Path,
    sections: tuple[str, ...] = ("findings", "impression"),
    frontal_only: bool = True,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Index IU X-ray / OpenI (``indiana_reports.csv`` + ``indiana_projections.csv`` + ``images/``).

    Reports carry ``findings`` and ``impression`` columns; patient-level splits are drawn with core's hashing
    (``uid`` is the patient). A report whose requested sections are all empty is bad input.
    """
    root = Path(root)
    rep_path = _find(root, "indiana_reports.csv")
    reps = read_manifest(rep_path, {"uid": int})
    proj = read_manifest(_find(root, "indiana_projections.csv"), {"uid": int, "filename": str, "projection": str})
    report: dict[str, Any] = {"rows": len(proj), "wrong_view": 0}
    if frontal_only:
        keep = proj["projection"].str.strip().str.lower() == "frontal"
        report["wrong_view"] = int((~keep).sum())
        proj = proj[keep]
    policy = SkipPolicy(skip_bad=skip_bad, catch=(BadInputError, OSError), name="IU X-ray rows")
    texts: dict[int, str] = {}
    for i, row in reps.iterrows():
        with policy.guard(f"{rep_path.name} row {i}") as g:
            parts = []
            for s in sections:
                if s not in reps.columns:
                    raise MissingColumnError(f"{rep_path.name}: no column {s!r}")
                v = row[s]
                if isinstance(v, str) and v.strip():
                    parts.append(f"{s.upper()}: {v.strip()}")
            if not parts:
                raise BadInputError(f"{rep_path.name}: row {i}: empty {'/'.join(sections)}")
        if not g.skipped:
            texts[int(row["uid"])] = " ".join(parts)
    proj = proj[proj["uid"].isin(list(texts))]
    image_dir = root / "images" / "images_normalized"
    if not image_dir.is_dir():
        image_dir = root / "images"
    splits = patient_split_labels(proj["uid"].tolist(), split_fractions, seed=seed)
    out = pd.DataFrame({
        "key": proj["filename"].to_numpy(), "path": [str(image_dir / f) for f in proj["filename"]],
        "text": [texts[u] for u in proj["uid"]], "split": splits, "patient": proj["uid"].to_numpy(),
        "view": proj["projection"].to_numpy(),
    })  # fmt: skip
    report["skipped"] = policy.report()
    return _finish(out, [], report)


def manifest_index(
    path: str | Path, labels: Sequence[str] = (), uncertain: str = "ignore", patient_split_seed: int | None = None
) -> pd.DataFrame:
    """Generic manifest (CSV/TSV/JSONL/Parquet): ``path`` (relative to the manifest's folder or absolute),
    optional ``text``, ``split``, ``patient``, ``view`` and the given label columns (CheXpert value convention).

    Without a ``split`` column, ``patient_split_seed`` draws patient-level 80/10/10 splits (needs ``patient``).
    """
    path = Path(path)
    frame = read_manifest(path, {"path": str})
    base = path.parent
    out = pd.DataFrame({"key": [f"{path.name}:{i}" for i in range(len(frame))],
                        "path": [p if Path(p).is_absolute() else str(base / p) for p in frame["path"]]})  # fmt: skip
    out["text"] = frame["text"].to_numpy() if "text" in frame.columns else None
    if "split" in frame.columns:
        out["split"] = frame["split"].astype(str).to_numpy()
    elif patient_split_seed is not None:
        if "patient" not in frame.columns:
            raise MissingColumnError(f"{path}: patient-level splits need a 'patient' column")
        out["split"] = patient_split_labels(frame["patient"].tolist(), seed=patient_split_seed)
    else:
        out["split"] = "train"
    out["patient"] = frame["patient"].to_numpy() if "patient" in frame.columns else None
    out["view"] = frame["view"].to_numpy() if "view" in frame.columns else ""
    if labels:
        out = pd.concat([out, parse_labels(frame, labels, path.name, uncertain).reset_index(drop=True)], axis=1)
    return _finish(out, list(labels), {"rows": len(frame)})


class CxrTextDataset(Dataset):
    """Image (+ report, + labels) samples from an index frame.

    Args:
        frame: an indexer's output (or a subset of it).
        split: keep rows of this split (``None`` = all rows).
        transform: image preprocessing (default :class:`~vlp_medical.transforms.CxrTransform` at 224).
        train: random augmentation (seeded per ``(seed, epoch, index)``: pass ``ds[(epoch, i)]``).
        labels: label columns to return (default ``frame.attrs["labels"]``).
        texts: optional callable ``row -> list[str | (str, kind)]`` of extra texts (e.g. MAKE ontology text and
            sub-captions) returned as ``"aspects"``.
        read_kwargs: forwarded to :func:`~vlp_medical.io.read_image` (``voi``, ``window``, ``sixteen_bit``...).
        cache: keep images in memory: decoded arrays when ``train`` (augmentation still runs per draw), decoded
            and preprocessed tensors otherwise.
        skip_bad: a bad image yields ``None`` (dropped by :func:`collate_cxr`), counted in ``self.policy``.
        seed: augmentation seed.

    Sample: ``{"image": [C, S, S], "text": str, "labels": [K] (NaN = ignored), "index": int}``.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        split: str | None = None,
        transform: CxrTransform | None = None,
        train: bool = False,
        labels: Sequence[str] | None = None,
        texts: Callable[[pd.Series], list[str]] | None = None,
        read_kwargs: dict[str, Any] | None = None,
        cache: bool = False,
        skip_bad: bool = False,
        seed: int = 0,
    ) -> None:
        self.labels = list(frame.attrs.get("labels", []) if labels is None else labels)
        self.frame = (frame[frame["split"] == split] if split is not None else frame).reset_index(drop=True)
        self.transform = transform or CxrTransform()
        self.train, self.texts, self.seed = train, texts, seed
        self.read_kwargs = dict(read_kwargs or {})
        self.mode = "RGB" if self.transform.channels == 3 else "L"
        self.policy = SkipPolicy(skip_bad=skip_bad, catch=(BadInputError, OSError), name="images")
        self._cache: dict[int, Any] | None = {} if cache else None
        self.label_matrix = (
            torch.tensor(self.frame[self.labels].to_numpy(dtype=np.float32))
            if self.labels
            else torch.zeros(len(self.frame), 0)
        )

    def __len__(self) -> int:
        return len(self.frame)

    def image(self, i: int, epoch: int = 0) -> Tensor:
        cached = self._cache.get(i) if self._cache is not None else None
        if cached is not None and not self.train:
            return cached
        img = (
            cached
            if cached is not None
            else read_image(self.frame.at[i, "path"], mode=self.mode, **self.read_kwargs)[0]
        )
        if self._cache is not None and self.train:
            self._cache[i] = img
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + i) if self.train else None
        x = self.transform(img, train=self.train, generator=gen)
        if self._cache is not None and not self.train:
            self._cache[i] = x
        return x

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch, i = item if isinstance(item, tuple) else (0, item)
        with self.policy.guard(self.frame.at[i, "key"]) as g:
            x = self.image(i, epoch)
        if g.skipped:
            return None
        sample: dict[str, Any] = {"image": x, "labels": self.label_matrix[i], "index": i}
        text = self.frame.at[i, "text"] if "text" in self.frame.columns else None
        if isinstance(text, str):
            sample["text"] = text
        if self.texts is not None:
            sample["aspects"] = list(self.texts(self.frame.iloc[i]))
        return sample


def report_sentences(row: pd.Series) -> list[str]:
    """The sentences of a row's report (``row["text"]``; section labels dropped): the ``texts`` callable of
    :class:`CxrTextDataset` for the sentence-level term of :func:`vlp_medical.models.build_model`."""
    return split_sentences(str(row["text"]))


def collate_cxr(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack images/labels, list texts, and flatten per-sample ``aspects`` lists into ``aspects`` + ``aspects_owner``."""
    samples = [s for s in samples if s is not None]
    if not samples:
        raise BadInputError("every sample of the batch was skipped as bad input")
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
    }
    if all("text" in s for s in samples):
        batch["text"] = [s["text"] for s in samples]
    if all("aspects" in s for s in samples):
        # Sample-major flat list; items may be (text, kind) pairs (MAKE: 1 ontology, 2 sub-caption) or plain texts.
        flat = [(t if isinstance(t, tuple) else (t, 2)) for s in samples for t in s["aspects"]]
        batch["aspects"] = [t for t, _ in flat]
        batch["aspects_kind"] = torch.tensor([k for _, k in flat], dtype=torch.long)
        batch["aspects_owner"] = torch.tensor(
            [b for b, s in enumerate(samples) for _ in s["aspects"]], dtype=torch.long
        )
        # Equal texts of different samples (e.g. "No pneumothorax") are positives of all their owners, not negatives.
        batch["aspects_ids"] = text_ids(batch["aspects"])
    return batch
