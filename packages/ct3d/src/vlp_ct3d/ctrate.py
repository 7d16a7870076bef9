"""CT-RATE indexer, report builder and the volume–report dataset.

Layout (HF ``ibrahimhamamci/CT-RATE``)::

    dataset/{train,valid}/<split>_<pid>/<split>_<pid>_<scan>/<split>_<pid>_<scan>_<recon>[_fixed].nii.gz
    radiology_text_reports/{train,validation}_reports.csv   VolumeName, ClinicalInformation_EN, Technique_EN,
                                                            Findings_EN, Impressions_EN
    multi_abnormality_labels/{train,valid}_predicted_labels.csv   VolumeName + 18 label columns (by name)
    metadata/{train,validation}_metadata.csv                VolumeName, RescaleSlope, RescaleIntercept, ...

Everything is joined by ``VolumeName``; labels are selected by column name, never by position.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlp_core.data.errors import BadInputError, MissingColumnError
from vlp_core.data.skip import SkipPolicy

__all__ = [
    "CTRATE_LABELS",
    "REPORT_COLUMNS",
    "ReportError",
    "build_report",
    "clean_section",
    "ctrate_index",
    "parse_volume_name",
    "CTReportDataset",
]

#: The 18 CT-RATE abnormality columns (multi_abnormality_labels CSVs).
CTRATE_LABELS: tuple[str, ...] = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
)  # fmt: skip
REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
_SPLIT_FILES = {
    "train": ("train", "train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv"),
    "valid": ("valid", "validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv"),
}
_NAME = re.compile(
    r"^(?P<split>train|valid)_(?P<pid>\d+)_(?P<scan>[a-z]+)_(?P<recon>\d+)(?P<fixed>_fixed)?(\.nii(\.gz)?)?$"
)
_MISSING = {"", "not given.", "not given", "nan", "none"}


class ReportError(BadInputError):
    """A report is empty after cleaning."""


def parse_volume_name(name: str) -> dict[str, str]:
    """``valid_885_a_1.nii.gz`` → ``{split, patient, scan, recon, fixed}`` (patient = ``valid_885``)."""
    m = _NAME.match(Path(name).name)
    if m is None:
        raise BadInputError(f"{name!r} is not a CT-RATE volume name (<split>_<patient>_<scan>_<recon>.nii.gz)")
    patient = f"{m['split']}_{m['pid']}"
    return {"split": m["split"], "patient": patient, "scan": f"{patient}_{m['scan']}", "recon": m["recon"],
            "fixed": bool(m["fixed"])}  # fmt: skip


def clean_section(text: Any) -> str:
    """Strip whitespace; CT-RATE's "Not given." and missing values become ""."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = " ".join(str(text).split())
    return "" if s.lower() in _MISSING else s


def build_report(findings: Any, impression: Any, source: str = "") -> str:
    """``"Findings: … Impression: …"`` from the two sections (an empty section is left out).

    Raises:
        ReportError: both sections empty after cleaning.
    """
    f, i = clean_section(findings), clean_section(impression)
    parts = ([f"Findings: {f}"] if f else []) + ([f"Impression: {i}"] if i else [])
    if not parts:
        raise ReportError(f"{source or 'report'}: empty after cleaning (Findings and Impression both missing)")
    return " ".join(parts)


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"CT-RATE file missing: {path}")
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MissingColumnError(f"{path}: missing columns {missing}")
    if df["VolumeName"].duplicated().any():
        dup = df.loc[df["VolumeName"].duplicated(), "VolumeName"].iloc[0]
        raise BadInputError(f"{path}: duplicate VolumeName {dup!r}")
    return df


def ctrate_index(
    root: str | Path,
    split: str = "train",
    labels: Sequence[str] | None = None,
    hu_mode: str = "already_hu",
    require_files: bool = False,
    no_chest: str | Path | None = None,
) -> pd.DataFrame:
    """Join CT-RATE reports, labels and metadata for one split into one row per volume.

    Args:
        root: CT-RATE root folder.
        split: ``"train"`` or ``"valid"``.
        labels: label columns to keep (by name); default all 18 of :data:`CTRATE_LABELS`.
        hu_mode: ``"already_hu"`` for the ``*_fixed`` (2025) volumes, ``"apply_rescale"`` for v1 volumes (slope and
            intercept then come from the metadata CSV; the NIfTI header values are ignored).
        require_files: drop nothing, but raise if a volume file is missing.
        no_chest: optional text file with VolumeNames to exclude (CT-RATE's ``no_chest_*.txt``).

    Returns:
        DataFrame with ``VolumeName, path, patient, scan, text, hu_mode, slope, intercept`` and one 0/1 column per
        label.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    folder, rep_file, lab_file, meta_file = _SPLIT_FILES[split]
    root = Path(root)
    labels = list(CTRATE_LABELS if labels is None else labels)
    reports = _read_csv(root / "radiology_text_reports" / rep_file, REPORT_COLUMNS)
    lab = _read_csv(root / "multi_abnormality_labels" / lab_file, ["VolumeName", *labels])
    df = reports.merge(lab[["VolumeName", *labels]], on="VolumeName", how="inner", validate="one_to_one")
    if len(df) != len(reports):
        missing = sorted(set(reports["VolumeName"]) - set(lab["VolumeName"]))[:3]
        raise BadInputError(f"{root}: {len(reports) - len(df)} reports have no label row (e.g. {missing})")
    meta_path = root / "metadata" / meta_file
    if meta_path.is_file():
        meta = _read_csv(meta_path, ["VolumeName", "RescaleSlope", "RescaleIntercept"])
        df = df.merge(meta[["VolumeName", "RescaleSlope", "RescaleIntercept"]], on="VolumeName", how="left")
        df = df.rename(columns={"RescaleSlope": "slope", "RescaleIntercept": "intercept"})
    elif hu_mode == "apply_rescale":
        raise FileNotFoundError(f"hu_mode='apply_rescale' needs the metadata CSV {meta_path}")
    else:
        df["slope"], df["intercept"] = np.nan, np.nan
    if hu_mode == "apply_rescale" and df[["slope", "intercept"]].isna().any().any():
        bad = df.loc[df[["slope", "intercept"]].isna().any(axis=1), "VolumeName"].iloc[0]
        raise BadInputError(f"{meta_path}: no RescaleSlope/RescaleIntercept for {bad!r}")
    if no_chest is not None:
        drop = {line.strip() for line in Path(no_chest).read_text().splitlines() if line.strip()}
        df = df[~df["VolumeName"].isin(drop)]
    parsed = [parse_volume_name(v) for v in df["VolumeName"]]
    df["patient"] = [p["patient"] for p in parsed]
    df["scan"] = [p["scan"] for p in parsed]
    df["path"] = [
        str(root / "dataset" / folder / p["patient"] / p["scan"] / v) for p, v in zip(parsed, df["VolumeName"])
    ]
    df["hu_mode"] = hu_mode
    texts = []
    for v, f, i in zip(df["VolumeName"], df["Findings_EN"], df["Impressions_EN"]):
        try:
            texts.append(build_report(f, i, source=v))
        except ReportError:
            texts.append("")
    df["text"] = texts
    for c in labels:
        vals = pd.to_numeric(df[c], errors="coerce")
        if vals.isna().any() or not vals.isin([0, 1]).all():
            raise BadInputError(f"{root / 'multi_abnormality_labels' / lab_file}: column {c!r} is not 0/1")
        df[c] = vals.astype(np.int64)
    if require_files:
        absent = [p for p in df["path"] if not Path(p).is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} CT-RATE volumes missing, e.g. {absent[0]}")
    df.attrs["labels"] = labels
    return df.reset_index(drop=True)


class CTReportDataset(torch.utils.data.Dataset):
    """Volume–report pairs from an index frame, through a MONAI pipeline (optionally a persistent cache).

    Samples: ``{"image": [1, D, H, W] float, "text": str, "labels": [C] float, "image_affine": [4, 4], "key": str}``.
    A row whose report is empty raises :class:`ReportError` (or is skipped and counted with ``skip_bad``).

    Args:
        frame: rows with ``path, text`` (+ ``hu_mode, slope, intercept`` and label columns).
        transform: the preprocessing pipeline (:func:`vlp_ct3d.transforms.build_transforms`).
        labels: label column names (default ``frame.attrs["labels"]``).
        cache_dir: persistent cache folder (``None`` = no cache).
        skip_bad: skip bad rows (returns ``None``, dropped by ``collate_volumes``) instead of raising.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        transform: Any,
        labels: Sequence[str] | None = None,
        cache_dir: str | Path | None = None,
        skip_bad: bool = False,
    ) -> None:
        from vlp_ct3d.transforms import cached_dataset

        self.frame = frame.reset_index(drop=True)
        self.labels = list(labels if labels is not None else frame.attrs.get("labels", []))
        self.policy = SkipPolicy(skip_bad=skip_bad)
        items = []
        for _, row in self.frame.iterrows():
            item = {"image": row["path"]}
            if row.get("hu_mode", "already_hu") == "apply_rescale":
                item["slope"], item["intercept"] = float(row["slope"]), float(row["intercept"])
            items.append(item)
        if cache_dir is not None:
            self._images = cached_dataset(items, transform, cache_dir)
        else:
            from monai.data import Dataset

            self._images = Dataset(items, transform)
        y = self.frame[self.labels].to_numpy(dtype=np.float32) if self.labels else np.zeros((len(frame), 0), np.float32)
        self.targets = torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        key = str(self.frame.loc[i, "VolumeName"]) if "VolumeName" in self.frame else str(i)
        with self.policy.guard(key) as guard:
            text = str(self.frame.loc[i, "text"])
            if not text.strip():
                raise ReportError(f"{key}: report is empty after cleaning")
            d = self._images[i]
            return {"image": d["image"], "image_affine": d["image_affine"], "text": text, "labels": self.targets[i],
                    "key": key}  # fmt: skip
        assert guard.skipped
        return None


def collate_volumes(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack volumes/labels, list texts/keys; ``None`` samples (skipped) are dropped."""
    samples = [s for s in samples if s is not None]
    if not samples:
        raise BadInputError("every sample of the batch was skipped")
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else list(vals)
    return out


def warn_if_truncated(tokenizer: Any, texts: Sequence[str], max_length: int, what: str = "prompt") -> None:
    """Warn (naming the text) when a text is longer than the tokenizer limit and will be truncated."""
    ids = tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
    for t, row in zip(texts, ids):
        if len(row) > max_length:
            warnings.warn(
                f"{what} {t[:60]!r}... has {len(row)} tokens; truncated to the text tower's limit of {max_length}",
                UserWarning,
                stacklevel=2,
            )
