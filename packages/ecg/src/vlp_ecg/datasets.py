"""Dataset indexers (PTB-XL, MIMIC-IV-ECG, PTB Diagnostic, generic manifest), the prepared memmap store, the torch
dataset and the Lightning data module.

Every indexer returns an :class:`ECGIndex`: a DataFrame with one row per record and the columns ``key`` (record
key safe to log: never a patient id), ``path`` (record path without suffix), ``text`` (report), ``labels``
(list of label names) and ``split`` (``train``/``val``/``test``), plus ``classes`` (sorted label names).
Labels become matrices **by name** (:func:`labels_to_matrix`), never by column position.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vlp_core.data import BadInputError, SkipPolicy, collate_batch, patient_split_labels, read_manifest
from vlp_core.text import split_sentences  # noqa: F401 - re-exported for vlp-ecg 0.1 users
from vlp_core.training import PairedDataModule
from vlp_ecg.beats import detect_rpeaks
from vlp_ecg.io import STANDARD_LEADS, ECGBadInputError, read_record
from vlp_ecg.transforms import BandPass, Compose, CropPad, Normalize, Notch, RandomLeadMask, Resample, build_transforms
from vlp_ecg.transforms import sample_rng as _sample_rng

__all__ = [
    "LABEL_LEVELS",
    "ECGDataModule",
    "ECGIndex",
    "ECGShardItem",
    "ECGShardSample",
    "ECGStore",
    "ECGTextDataset",
    "clean_report",
    "index_dataset",
    "labels_to_matrix",
    "load_scp_statements",
    "manifest_index",
    "mimic_index",
    "prepare_shards",
    "prepare_store",
    "prepare_summary",
    "ptbdb_index",
    "ptbxl_index",
    "split_sentences",
]

LABEL_LEVELS = ("superclass", "subclass", "form", "rhythm", "diagnostic", "all")
MIMIC_MISSING = 29999


# ---------------------------------------------------------------------------------------------------- text
def clean_report(text: str) -> str:
    """Normalise a report: collapse whitespace, strip ``*``, ``=``, ``-`` from both ends, ``EKG`` -> ``ECG``,
    lower-case, end with a full stop. Empty input returns ``""`` (callers reject it)."""
    t = re.sub(r"\s+", " ", str(text or "")).strip().strip("*=- ")
    if not t:
        return ""
    t = re.sub(r"\bekg\b", "ecg", t, flags=re.IGNORECASE).lower()
    return t if t.endswith(".") else t + "."


def labels_to_matrix(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Multi-hot matrix aligned **by class name**.

    Args:
        labels: per record, the list of its label names.
        classes: column names (order of the output columns).

    Returns:
        ``(N, len(classes))`` float32; labels not in ``classes`` are ignored.
    """
    col = {c: j for j, c in enumerate(classes)}
    if len(col) != len(classes):
        raise ValueError(f"duplicate class names in {list(classes)}")
    y = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, labs in enumerate(labels):
        for lab in labs:
            j = col.get(lab)
            if j is not None:
                y[i, j] = 1.0
    return y


@dataclass
class ECGIndex:
    """A dataset index: ``frame`` (columns key, path, text, labels, split, ...) and the sorted ``classes``."""

    frame: pd.DataFrame
    classes: list[str]
    name: str = "ecg"
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``, ``val``, ``test``)."""
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def label_matrix(self, frame: pd.DataFrame | None = None, classes: Sequence[str] | None = None) -> np.ndarray:
        """Multi-hot labels of ``frame`` (default: all rows) over ``classes`` (default: :attr:`classes`), by name."""
        frame = self.frame if frame is None else frame
        return labels_to_matrix(list(frame["labels"]), list(classes or self.classes))


def _finish(frame: pd.DataFrame, name: str, info: dict[str, Any] | None = None) -> ECGIndex:
    classes = sorted({lab for labs in frame["labels"] for lab in labs})
    return ECGIndex(frame.reset_index(drop=True), classes, name, info or {})


# ---------------------------------------------------------------------------------------------------- PTB-XL
def load_scp_statements(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``scp_statements.csv`` (index = SCP code)."""
    path = Path(root) / "scp_statements.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: PTB-XL scp_statements.csv not found")
    return pd.read_csv(path, index_col=0)


def _parse_scp(value: Any, where: str) -> dict[str, float]:
    try:
        parsed = ast.literal_eval(str(value))  # a dict literal; never eval()
    except (ValueError, SyntaxError) as exc:
        raise BadInputError(f"{where}: scp_codes {value!r} is not a dict literal") from exc
    if not isinstance(parsed, dict):
        raise BadInputError(f"{where}: scp_codes {value!r} is not a dict")
    return {str(k): float(v) for k, v in parsed.items()}


def aggregate_scp(codes: dict[str, float], statements: pd.DataFrame, level: str, min_likelihood: float = 0.0) -> list:
    """Map SCP codes to a label set, **by statement name** (Strodthoff et al. aggregation).

    Args:
        codes: ``{code: likelihood}``.
        statements: ``scp_statements.csv`` frame (index = code).
        level: ``superclass`` (``diagnostic_class``), ``subclass`` (``diagnostic_subclass``), ``diagnostic``,
            ``form``, ``rhythm`` or ``all`` (every known code).
        min_likelihood: drop codes whose likelihood is below this (0 keeps all, as in the benchmark).

    Returns:
        Sorted unique label names.
    """
    out = set()
    for code, lik in codes.items():
        if lik < min_likelihood or code not in statements.index:
            continue
        row = statements.loc[code]
        if level == "all":
            out.add(code)
        elif level in ("superclass", "subclass", "diagnostic"):
            if row.get("diagnostic") == 1:
                col = {"superclass": "diagnostic_class", "subclass": "diagnostic_subclass"}.get(level)
                value = code if col is None else row.get(col)
                if isinstance(value, str) and value:
                    out.add(value)
        elif level in ("form", "rhythm"):
            if row.get(level) == 1:
                out.add(code)
        else:
            raise ValueError(f"unknown label level {level!r}; choose one of {LABEL_LEVELS}")
    return sorted(out)


def ptbxl_index(
    root: str | os.PathLike,
    sampling_rate: int = 100,
    labels: str = "superclass",
    text: str = "report",
    min_likelihood: float = 0.0,
    val_folds: Sequence[int] = (9,),
    test_folds: Sequence[int] = (10,),
    drop_unlabelled: bool = False,
) -> ECGIndex:
    """Index PTB-XL (``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records100``/``records500``).

    Args:
        root: PTB-XL folder.
        sampling_rate: 100 (``filename_lr``) or 500 (``filename_hr``).
        labels: label level, see :func:`aggregate_scp`.
        text: ``"report"`` (the free-text report, mostly German in the real data) or ``"statements"`` (English
            descriptions of the record's SCP codes from ``scp_statements.csv``).
        min_likelihood: see :func:`aggregate_scp`.
        val_folds: ``strat_fold`` values for validation (default 9).
        test_folds: ``strat_fold`` values for testing (default 10); all other folds train.
        drop_unlabelled: drop records without any label at this level (the benchmark does, per task).

    Returns:
        :class:`ECGIndex`; ``key`` is the ``ecg_id``.
    """
    root = Path(root)
    db_path = root / "ptbxl_database.csv"
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: PTB-XL ptbxl_database.csv not found")
    if sampling_rate not in (100, 500):
        raise ValueError(f"PTB-XL sampling_rate must be 100 or 500, got {sampling_rate}")
    if text not in ("report", "statements"):
        raise ValueError(f"text must be 'report' or 'statements', got {text!r}")
    db = pd.read_csv(db_path, index_col="ecg_id")
    missing = {"scp_codes", "strat_fold", "filename_lr", "filename_hr"} - set(db.columns)
    if missing:
        raise BadInputError(f"{db_path}: missing column(s) {sorted(missing)}")
    stmts = load_scp_statements(root)
    col = "filename_lr" if sampling_rate == 100 else "filename_hr"
    val_folds, test_folds = {int(f) for f in val_folds}, {int(f) for f in test_folds}
    rows = []
    for ecg_id, r in db.iterrows():
        codes = _parse_scp(r["scp_codes"], f"{db_path} ecg_id {ecg_id}")
        labs = aggregate_scp(codes, stmts, labels, min_likelihood)
        if drop_unlabelled and not labs:
            continue
        fold = int(r["strat_fold"])
        split = "test" if fold in test_folds else "val" if fold in val_folds else "train"
        if text == "report":
            report = r.get("report", "")
            report = "" if (isinstance(report, float) and math.isnan(report)) else str(report)
        else:
            descs = [str(stmts.loc[c, "description"]) for c in codes if c in stmts.index]
            report = ". ".join(descs)
        rows.append({"key": str(ecg_id), "path": str(root / r[col]), "text": clean_report(report), "labels": labs,
                     "split": split, "strat_fold": fold})  # fmt: skip
    return _finish(
        pd.DataFrame(rows),
        "ptbxl",
        {"labels": labels, "sampling_rate": sampling_rate, "fs": sampling_rate, "text": text},
    )


# ---------------------------------------------------------------------------------------------------- MIMIC
def mimic_index(
    root: str | os.PathLike, fractions: Sequence[float] = (0.98, 0.01, 0.01), seed: int = 0, min_words: int = 1
) -> ECGIndex:
    """Index MIMIC-IV-ECG (``record_list.csv`` + ``machine_measurements.csv``).

    The machine report is the non-empty ``report_0..report_17`` columns joined in numeric order with ``". "``.
    Numeric measurements equal to 29999 become NaN. Splits are by ``subject_id`` (core ``patient_split``), the
    ``key`` is the ``study_id`` (not the patient id).

    Args:
        root: MIMIC-IV-ECG folder.
        fractions: train/val/test patient fractions.
        seed: split seed.
        min_words: reports with fewer words become empty text (rejected at load unless ``skip_bad``).
    """
    root = Path(root)
    rl_path, mm_path = root / "record_list.csv", root / "machine_measurements.csv"
    records = read_manifest(rl_path, ["subject_id", "study_id", "path"])
    mm = read_manifest(mm_path, ["subject_id", "study_id"])
    report_cols = sorted([c for c in mm.columns if re.fullmatch(r"report_\d+", c)], key=lambda c: int(c[7:]))
    if not report_cols:
        raise BadInputError(f"{mm_path}: no report_N columns")

    def join(row: pd.Series) -> str:
        parts = [str(row[c]).strip() for c in report_cols if isinstance(row[c], str) and str(row[c]).strip()]
        return ". ".join(p.rstrip(".") for p in parts)

    mm = mm.copy()
    mm["text"] = mm.apply(join, axis=1).map(clean_report)
    num_cols = [c for c in mm.columns if c not in report_cols and pd.api.types.is_numeric_dtype(mm[c])]
    for c in num_cols:
        if c not in ("subject_id", "study_id", "cart_id"):
            mm[c] = mm[c].where(mm[c] != MIMIC_MISSING)
    keep = ["subject_id", "study_id", "text"] + [c for c in num_cols if c not in ("subject_id", "study_id")]
    df = records.merge(mm[keep], on=["subject_id", "study_id"], how="left", validate="one_to_one")
    df["text"] = df["text"].fillna("")
    df.loc[df["text"].str.split().str.len().fillna(0) < min_words, "text"] = ""
    df["split"] = patient_split_labels(df["subject_id"].tolist(), fractions, seed)
    df["key"] = df["study_id"].astype(str)
    df["log_name"] = "MIMIC-IV-ECG study " + df["key"]  # record paths contain the subject id: never log them
    df["path"] = [str(root / p) for p in df["path"]]
    df["labels"] = [[] for _ in range(len(df))]
    df = df.drop(columns=["subject_id"])  # patient ids stay out of the index that flows into logs
    return _finish(df, "mimic", {"fs": 500})


# ---------------------------------------------------------------------------------------------------- PTB Diagnostic
_PTBDB_FIELDS = ("Reason for admission", "Acute infarction (localization)", "Former infarction (localization)",
                 "Additional diagnoses", "Ventriculography", "Chest X-ray")  # fmt: skip


def ptbdb_text(comments: Sequence[str]) -> tuple[str, list[str]]:
    """Clinical text and labels from PTB Diagnostic header comments.

    Returns:
        ``(text, labels)``: text joins the informative ``key: value`` fields (``n/a``/``no``/``unknown`` dropped);
        the label is the reason for admission.
    """
    fields: dict[str, str] = {}
    for line in comments:
        key, sep, value = str(line).partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    parts, labels = [], []
    for k in _PTBDB_FIELDS:
        v = fields.get(k, "")
        if v and v.lower() not in ("n/a", "no", "unknown", "none"):
            parts.append(f"{k.lower()}: {v}")
            if k == "Reason for admission":
                labels.append(v.lower())
    return clean_report(". ".join(parts)), labels


def ptbdb_index(root: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> ECGIndex:
    """Index the PTB Diagnostic ECG Database: every ``*.hea`` under ``root``; text from the header comments.

    Splits are by the parent folder (``patientNNN``) when records sit in patient folders, else by record.
    """
    from vlp_ecg.io import read_header

    root = Path(root)
    heads = sorted(root.rglob("*.hea"))
    if not heads:
        raise FileNotFoundError(f"{root}: no .hea files found")
    rows, groups = [], []
    for h in heads:
        base = str(h)[:-4]
        header = read_header(base)
        text, labels = ptbdb_text(header.comments or [])
        rows.append({"key": h.stem, "path": base, "text": text, "labels": labels})
        groups.append(h.parent.name if h.parent != root else h.stem)
    df = pd.DataFrame(rows)
    df["split"] = patient_split_labels(groups, fractions, seed)
    return _finish(df, "ptbdb", {"fs": 1000})


# ---------------------------------------------------------------------------------------------------- manifest
def manifest_index(path: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> ECGIndex:
    """Index a generic manifest (CSV/Parquet/JSONL) with columns ``path``, ``text``, optional ``labels``
    (``;``-separated names or a list), optional ``split`` and optional ``patient_id`` (used for splitting, then
    dropped). Relative paths are resolved against the manifest's folder."""
    path = Path(path)
    df = read_manifest(path, {"path": str, "text": object})
    base = path.parent
    df["path"] = [str(p if os.path.isabs(p) else base / p) for p in df["path"].map(str)]
    df["text"] = df["text"].map(lambda t: clean_report(t) if isinstance(t, str) else "")
    if "labels" in df.columns:
        df["labels"] = df["labels"].map(
            lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray))
            else [s.strip() for s in str(v).split(";") if s.strip()] if isinstance(v, str) else []
        )  # fmt: skip
    else:
        df["labels"] = [[] for _ in range(len(df))]
    if "split" not in df.columns:
        groups = df["patient_id"].tolist() if "patient_id" in df.columns else df["path"].tolist()
        df["split"] = patient_split_labels(groups, fractions, seed)
    df = df.drop(columns=[c for c in ("patient_id",) if c in df.columns])
    df["key"] = [f"row{i}" for i in range(len(df))] if "key" not in df.columns else df["key"].map(str)
    return _finish(df, "manifest")


def index_dataset(dataset: str, root: str | os.PathLike, **kwargs: Any) -> ECGIndex:
    """Dispatch to an indexer by name: ``ptbxl``, ``mimic``, ``ptbdb`` or ``manifest`` (root = manifest file)."""
    fns = {"ptbxl": ptbxl_index, "mimic": mimic_index, "ptbdb": ptbdb_index, "manifest": manifest_index}
    if dataset not in fns:
        raise KeyError(f"unknown ECG dataset {dataset!r}; available: {sorted(fns)}")
    return fns[dataset](root, **kwargs)


# ---------------------------------------------------------------------------------------------------- loading
@dataclass
class LoadConfig:
    """How a record becomes a fixed-size array (shared by the direct dataset and :func:`prepare_store`).

    Args:
        leads: lead names in output order.
        target_fs: output rate (Hz).
        duration: output length (s); shorter records are padded with ``ecg_mask`` False.
        expected_fs: reject records whose rate differs (``None`` accepts any and resamples).
        bandpass: ``(low, high)`` Hz or ``None``.
        notch: mains frequency or ``None``.
        missing / flat: see :func:`vlp_ecg.io.read_record`.
        nan: invalid-sample policy (see :func:`vlp_ecg.io.read_record`). Default ``"interpolate"``: gaps of at
            most ``max_nan_gap`` s (50 ms) in a lead with at most ``max_nan_fraction`` (1 %) invalid samples are
            linearly interpolated and counted; a record beyond that raises (skipped and counted with
            ``skip_bad``). ``"mask"`` masks such a lead instead; ``"error"`` refuses any invalid sample.
        max_nan_gap / max_nan_fraction: the repair limits.
    """

    leads: Sequence[str] = STANDARD_LEADS
    target_fs: float = 100.0
    duration: float = 10.0
    expected_fs: float | None = None
    bandpass: tuple[float, float] | None = None
    notch: float | None = None
    missing: str = "error"
    flat: str = "error"
    nan: str = "interpolate"
    max_nan_gap: float = 0.05
    max_nan_fraction: float = 0.01

    def pipeline(self) -> Compose:
        ts: list = []
        if self.bandpass is not None:
            ts.append(BandPass(*self.bandpass))
        if self.notch is not None:
            ts.append(Notch(self.notch))
        ts += [Resample(self.target_fs), CropPad(self.duration, mode="start")]
        return Compose(ts)


def load_sample(path: str, text: str, key: str, cfg: LoadConfig, log_name: str | None = None) -> dict[str, Any]:
    """Read, validate, filter, resample and crop/pad one record. Raises ECGBadInputError naming the record.

    Args:
        log_name: shown instead of ``path`` in error messages, for layouts whose paths contain patient ids
            (MIMIC-IV-ECG's ``pNNNNNNNN`` folders), so that ids never reach logs.
    """
    name = log_name or path
    if not isinstance(text, str) or not text.strip():
        raise ECGBadInputError(f"{name}: empty report text (record key {key})")
    try:
        rec = read_record(path, cfg.leads, missing=cfg.missing, flat=cfg.flat, expected_fs=cfg.expected_fs,
                          nan=cfg.nan, max_nan_gap=cfg.max_nan_gap, max_nan_fraction=cfg.max_nan_fraction)  # fmt: skip
    except ECGBadInputError as exc:
        if log_name is None:
            raise
        raise type(exc)(str(exc).replace(str(path), log_name)) from None
    sample = {"ecg": rec.signal, "fs": rec.fs, "lead_mask": rec.lead_mask}
    sample = cfg.pipeline()(sample)
    sample["nan"] = rec.meta.get("nan", {"interpolated": {}, "masked": []})
    return sample


def _log_name(row: pd.Series) -> str | None:
    value = row.get("log_name") if hasattr(row, "get") else None
    return value if isinstance(value, str) and value else None


class ECGStore:
    """A prepared, memory-mapped array store written by :func:`prepare_store`.

    Files: ``signals.npy`` ``(N, C, T)`` (mV, float32 or float16), ``lead_mask.npy`` ``(N, C)``, ``valid_len.npy``
    ``(N,)``, ``rpeaks.npy`` ``(N, max_beats)`` int32 (-1 padded), ``index.csv`` (key, text, labels, split) and
    ``store.json`` (rates, leads, preprocessing, skip report).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        meta_path = self.dir / "store.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.dir} is not a prepared ECG store (store.json missing); run vlp-ecg prepare")
        self.meta = json.loads(meta_path.read_text())
        n = int(self.meta["n"])
        self.signals = np.load(self.dir / "signals.npy", mmap_mode="r")[:n]
        self.lead_mask = np.load(self.dir / "lead_mask.npy")[:n]
        self.valid_len = np.load(self.dir / "valid_len.npy")[:n]
        self.rpeaks = np.load(self.dir / "rpeaks.npy")[:n]
        self.index = pd.read_csv(self.dir / "index.csv", keep_default_na=False, dtype={"key": str})
        self.index["labels"] = [[s for s in str(v).split(";") if s] for v in self.index["labels"]]
        self.fs = float(self.meta["fs"])
        self.leads = list(self.meta["leads"])
        self.classes = list(self.meta.get("classes", []))

    def __len__(self) -> int:
        return len(self.index)


def prepare_store(
    index: ECGIndex,
    out_dir: str | os.PathLike,
    cfg: LoadConfig | None = None,
    *,
    skip_bad: bool = False,
    dtype: str = "float32",
    max_beats: int = 40,
    splits: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode every record once into a memory-mapped store (``vlp-ecg prepare``).

    Args:
        index: dataset index.
        out_dir: output folder (created).
        cfg: loading configuration (rate, duration, filters, lead policy).
        skip_bad: skip and count bad records instead of stopping at the first.
        dtype: ``float32`` or ``float16`` storage.
        max_beats: R peaks stored per record.
        splits: only these splits (default all).
        progress: progress bar.

    Returns:
        The store metadata (also written to ``store.json``), including the skip report.
    """
    cfg = cfg or LoadConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = index.frame if splits is None else index.frame[index.frame["split"].isin(list(splits))]
    frame = frame.reset_index(drop=True)
    n_all = len(frame)
    t_len = int(round(cfg.duration * cfg.target_fs))
    sig = np.lib.format.open_memmap(out / "signals.npy", mode="w+", dtype=dtype, shape=(n_all, len(cfg.leads), t_len))
    lead_mask = np.zeros((n_all, len(cfg.leads)), dtype=bool)
    valid_len = np.zeros(n_all, dtype=np.int32)
    rpeaks = np.full((n_all, max_beats), -1, dtype=np.int32)
    policy = SkipPolicy(skip_bad=skip_bad, catch=(BadInputError, OSError), name=f"{index.name} records")
    kept = []
    repairs = {"records_interpolated": 0, "samples_interpolated": 0, "records_masked": 0, "leads_masked": 0}
    j = 0
    for i in tqdm(range(n_all), desc=f"prepare {index.name}", disable=not progress):
        row = frame.iloc[i]
        with policy.guard(row["key"]) as g:
            s = load_sample(row["path"], row["text"], row["key"], cfg, _log_name(row))
        if g.skipped:
            continue
        if s["nan"]["interpolated"]:
            repairs["records_interpolated"] += 1
            repairs["samples_interpolated"] += int(sum(s["nan"]["interpolated"].values()))
        if s["nan"]["masked"]:
            repairs["records_masked"] += 1
            repairs["leads_masked"] += len(s["nan"]["masked"])
        sig[j] = s["ecg"].astype(dtype)
        lead_mask[j] = s["lead_mask"]
        valid_len[j] = int(s["ecg_mask"].sum())
        r = detect_rpeaks(s["ecg"][s["lead_mask"]][:, : valid_len[j]], cfg.target_fs)[:max_beats]
        rpeaks[j, : len(r)] = r
        kept.append(i)
        j += 1
    sig.flush()
    del sig
    np.save(out / "lead_mask.npy", lead_mask)
    np.save(out / "valid_len.npy", valid_len)
    np.save(out / "rpeaks.npy", rpeaks)
    keep_frame = frame.iloc[kept].copy()
    keep_frame["labels"] = [";".join(labs) for labs in keep_frame["labels"]]
    cols = [c for c in ("key", "text", "labels", "split") if c in keep_frame.columns]
    keep_frame[cols].to_csv(out / "index.csv", index=False)
    meta = {
        "n": j,
        "fs": cfg.target_fs,
        "duration": cfg.duration,
        "leads": list(cfg.leads),
        "dtype": dtype,
        "bandpass": list(cfg.bandpass) if cfg.bandpass else None,
        "notch": cfg.notch,
        "source": index.name,
        "classes": index.classes,
        "info": index.info,
        "nan_policy": {"nan": cfg.nan, "max_nan_gap": cfg.max_nan_gap, "max_nan_fraction": cfg.max_nan_fraction},
        "repairs": repairs,
        "skipped": policy.report(),
    }
    (out / "store.json").write_text(json.dumps(meta, indent=2))
    return meta


def prepare_summary(meta: dict[str, Any]) -> str:
    """The one-line outcome of :func:`prepare_store`: records kept, repaired (invalid samples interpolated), with
    masked leads, and skipped with the reason types, e.g. ``"prepared 980 records: 12 repaired (37 invalid samples
    interpolated), 3 with masked leads (3 leads), 5 skipped (ECGInvalidSamplesError: 4, ECGBadInputError: 1)"``."""
    rep = meta.get("repairs", {})
    sk = meta.get("skipped", {})
    by_type = ", ".join(f"{k}: {v}" for k, v in sk.get("by_type", {}).items())
    pol = meta.get("nan_policy", {})
    return (
        f"prepared {meta['n']} records: {rep.get('records_interpolated', 0)} repaired "
        f"({rep.get('samples_interpolated', 0)} invalid samples interpolated), {rep.get('records_masked', 0)} with "
        f"masked leads ({rep.get('leads_masked', 0)} leads), {sk.get('n_skipped', 0)} skipped"
        + (f" ({by_type})" if by_type else "")
        + (f"; nan policy {pol.get('nan')} (gap <= {pol.get('max_nan_gap')} s, <= {pol.get('max_nan_fraction')})"
           if pol else "")
    )  # fmt: skip


class ECGTextDataset(Dataset):
    """ECG-report pairs from a prepared :class:`ECGStore` or directly from WFDB files.

    Each item is ``{"ecg": {"signal": [C, T] float32, "lead_mask": [C] bool, "rpeaks": [max_beats] long (-1
    padded)}, "text": str, "labels": [K] float32 (by class name), "key": str}``.

    Args:
        source: an :class:`ECGStore` or an :class:`ECGIndex`.
        split: which split (``None`` = all rows).
        classes: label columns (default: the source's classes).
        cfg: loading configuration for WFDB sources (ignored for stores).
        normalize: :class:`~vlp_ecg.transforms.Normalize` mode applied after augmentation.
        augment: transform specs applied before normalisation (training only), e.g.
            ``[{"name": "noise", "std": 0.02}]``.
        lead_mask_p: random lead masking probability (after normalisation).
        max_beats: R peaks per item.
        seed: augmentation seed (the draw depends on seed, epoch and index only).
        skip_bad: WFDB sources only: return ``None`` for a bad record (dropped by the collate, counted in
            :attr:`policy`) instead of raising.
        shuffle_pairs: control experiments only: pair each ECG with the report of another record of the split
            (a fixed seeded permutation), so nothing about the ECG is in its text.
    """

    def __init__(
        self,
        source: ECGStore | ECGIndex,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        cfg: LoadConfig | None = None,
        normalize: str = "zscore",
        augment: Sequence[dict[str, Any]] | None = None,
        lead_mask_p: float = 0.0,
        max_beats: int = 40,
        seed: int = 0,
        skip_bad: bool = False,
        shuffle_pairs: bool = False,
    ) -> None:
        self.source = source
        self.cfg = cfg or LoadConfig()
        frame = source.index if isinstance(source, ECGStore) else source.frame
        rows = np.arange(len(frame)) if split is None else np.flatnonzero((frame["split"] == split).to_numpy())
        self.rows = rows
        self.frame = frame.iloc[rows].reset_index(drop=True)
        if shuffle_pairs:
            perm = np.random.default_rng(seed + 7919).permutation(len(self.frame))
            self.frame["text"] = self.frame["text"].to_numpy()[perm]
        self.classes = list(classes if classes is not None else source.classes)
        self.labels = labels_to_matrix(list(self.frame["labels"]), self.classes)
        self.augment = build_transforms(augment, seed) if augment else None
        self.normalize = Normalize(normalize) if normalize else None
        self.lead_mask = RandomLeadMask(lead_mask_p) if lead_mask_p > 0 else None
        self.max_beats = max_beats
        self.seed = seed
        self.epoch = 0
        self.policy = SkipPolicy(skip_bad=skip_bad, catch=(BadInputError, OSError), name="ECG records")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frame)

    def _raw(self, i: int) -> dict[str, Any]:
        if isinstance(self.source, ECGStore):
            j = int(self.rows[i])
            n = int(self.source.valid_len[j])
            x = np.asarray(self.source.signals[j], dtype=np.float32)
            tmask = np.zeros(x.shape[-1], bool)
            tmask[:n] = True
            r = self.source.rpeaks[j]
            return {"ecg": x, "fs": self.source.fs, "lead_mask": self.source.lead_mask[j].copy(), "ecg_mask": tmask,
                    "rpeaks": r[r >= 0].astype(np.int64)}  # fmt: skip
        row = self.frame.iloc[i]
        s = load_sample(row["path"], row["text"], row["key"], self.cfg, _log_name(row))
        n = int(s["ecg_mask"].sum())
        s["rpeaks"] = detect_rpeaks(s["ecg"][s["lead_mask"]][:, :n], s["fs"])
        return s

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch, i = item if isinstance(item, tuple) else (self.epoch, item)
        row = self.frame.iloc[i]
        if isinstance(self.source, ECGStore):
            s = self._raw(i)
        else:
            with self.policy.guard(row["key"]) as g:
                s = self._raw(i)
            if g.skipped:
                return None
        rng = _sample_rng(self.seed, epoch, i)
        return _finish_item(s, str(row["text"]), self.labels[i], str(row["key"]), rng, self.augment, self.normalize,
                            self.lead_mask, self.max_beats)  # fmt: skip


def _finish_item(
    s: dict[str, Any], text: str, labels: np.ndarray, key: str, rng: np.random.Generator, augment: Any,
    normalize: Any, lead_mask: Any, max_beats: int,
) -> dict[str, Any]:  # fmt: skip
    """Augment, normalise, mask leads and pad R peaks: the training item shared by the memmap and shard paths."""
    if augment is not None:
        s = augment(s, rng)
    if normalize is not None:
        s = normalize(s)
    if lead_mask is not None:
        s = lead_mask(s, rng)
    r = np.full(max_beats, -1, dtype=np.int64)
    rp = np.asarray(s.get("rpeaks", []), dtype=np.int64)[:max_beats]
    r[: len(rp)] = rp
    return {
        "ecg": {
            "signal": torch.from_numpy(np.ascontiguousarray(s["ecg"], dtype=np.float32)),
            "lead_mask": torch.from_numpy(np.asarray(s["lead_mask"], bool)),
            "rpeaks": torch.from_numpy(r),
        },
        "text": text,
        "labels": torch.from_numpy(np.asarray(labels, dtype=np.float32)),
        "key": key,
    }


# ---------------------------------------------------------------------------------------------------- shards
def shard_config(cfg: LoadConfig, dtype: str = "float32", max_beats: int = 40) -> dict[str, Any]:
    """The preprocessing config stored (and hashed) in an ECG shard manifest."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    out["leads"] = list(cfg.leads)
    out["target_fs"], out["duration"] = float(cfg.target_fs), float(cfg.duration)
    return {**out, "dtype": dtype, "max_beats": int(max_beats)}


class ECGShardSample:
    """Writer function of :func:`prepare_shards` (runs in the writer workers): one index row -> a prepared sample
    ``{"id", "text", "labels" (names), "signal" [C, T], "lead_mask" [C] bool, "valid_len" int, "rpeaks"
    [max_beats] int32 (-1 padded)}``, or ``None`` for a bad record when ``skip_bad``."""

    def __init__(self, cfg: LoadConfig, dtype: str = "float32", max_beats: int = 40, skip_bad: bool = False) -> None:
        self.cfg, self.dtype, self.max_beats, self.skip_bad = cfg, dtype, max_beats, skip_bad

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        try:
            s = load_sample(row["path"], row["text"], row["key"], self.cfg, row.get("log_name"))
        except (BadInputError, OSError):
            if self.skip_bad:
                return None
            raise
        n = int(s["ecg_mask"].sum())
        r = np.full(self.max_beats, -1, dtype=np.int32)
        peaks = detect_rpeaks(s["ecg"][s["lead_mask"]][:, :n], self.cfg.target_fs)[: self.max_beats]
        r[: len(peaks)] = peaks
        return {"id": str(row["key"]), "text": str(row["text"]), "labels": list(row["labels"]),
                "signal": s["ecg"].astype(self.dtype), "lead_mask": np.asarray(s["lead_mask"], bool), "valid_len": n,
                "rpeaks": r}  # fmt: skip


def prepare_shards(
    index: ECGIndex,
    out: str,
    cfg: LoadConfig | None = None,
    *,
    skip_bad: bool = False,
    dtype: str = "float32",
    max_beats: int = 40,
    splits: Sequence[str] | None = None,
    num_workers: int | None = None,
    chunk_bytes: int | str = "64MB",
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode every record once into sharded streams, one per split (``<out>/train``, ``<out>/val``, ...).

    The sharded twin of :func:`prepare_store` for data too large for one memory-mapped file or kept in object
    storage (core's :func:`~vlp_core.data.shards.write_shards`). ``out`` is a folder or a URL such as
    ``s3://bucket/ecg/mimic`` (credentials and endpoint from ``storage_options`` or the AWS environment).
    Re-running after a kill finishes the job without rewriting complete shards.

    Returns:
        ``{"n": records kept, "skipped": records skipped, "splits": {split: manifest}}``.
    """
    from vlp_core.data.shards import write_shards

    cfg = cfg or LoadConfig()
    frame = index.frame if splits is None else index.frame[index.frame["split"].isin(list(splits))]
    extra = {"fs": float(cfg.target_fs), "leads": list(cfg.leads), "classes": index.classes, "source": index.name,
             "info": index.info}  # fmt: skip
    fn = ECGShardSample(cfg, dtype, max_beats, skip_bad)
    manifests = {}
    for split in [s for s in ("train", "val", "test") if (frame["split"] == s).any()]:
        part = frame[frame["split"] == split]
        rows = [{"path": r["path"], "text": r["text"], "key": str(r["key"]), "labels": list(r["labels"]),
                 "log_name": _log_name(r)} for _, r in part.iterrows()]  # fmt: skip
        manifests[split] = write_shards(fn, rows, f"{str(out).rstrip('/')}/{split}", domain="ecg",
                                        config=shard_config(cfg, dtype, max_beats), split=split, extra=extra,
                                        chunk_bytes=chunk_bytes, num_workers=num_workers,
                                        storage_options=storage_options, progress=progress)  # fmt: skip
    return {"n": sum(m["n_samples"] for m in manifests.values()),
            "skipped": sum(m["n_skipped"] for m in manifests.values()), "splits": manifests}  # fmt: skip


class ECGShardItem:
    """Item transform of ECG shards (picklable, runs in the loader workers): a stored sample -> the same training
    item as :class:`ECGTextDataset` (``{"ecg": {"signal" [C, T] float32, "lead_mask" [C] bool, "rpeaks"
    [max_beats] long}, "text", "labels" [K] float32 by class name, "key"}``); augmentation drawn from
    ``(seed, epoch, index)``."""

    def __init__(self, classes: Sequence[str], fs: float, normalize: str = "zscore",
                 augment: Sequence[dict[str, Any]] | None = None, lead_mask_p: float = 0.0, max_beats: int = 40,
                 seed: int = 0) -> None:  # fmt: skip
        self.classes, self.fs, self.max_beats, self.seed = list(classes), float(fs), max_beats, seed
        self.augment = build_transforms(augment, seed) if augment else None
        self.normalize = Normalize(normalize) if normalize else None
        self.lead_mask = RandomLeadMask(lead_mask_p) if lead_mask_p > 0 else None

    def __call__(self, sample: dict[str, Any], index: int, epoch: int) -> dict[str, Any]:
        x = np.asarray(sample["signal"], dtype=np.float32)
        tmask = np.zeros(x.shape[-1], bool)
        tmask[: int(sample["valid_len"])] = True
        r = np.asarray(sample["rpeaks"])
        s = {"ecg": x, "fs": self.fs, "lead_mask": np.asarray(sample["lead_mask"], bool).copy(), "ecg_mask": tmask,
             "rpeaks": r[r >= 0].astype(np.int64)}  # fmt: skip
        labels = labels_to_matrix([sample["labels"]], self.classes)[0]
        return _finish_item(s, str(sample["text"]), labels, str(sample["id"]), _sample_rng(self.seed, epoch, index),
                            self.augment, self.normalize, self.lead_mask, self.max_beats)  # fmt: skip


def collate_ecg(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Collate ECG items with core's :func:`~vlp_core.data.collate_batch`, dropping ``None`` (skipped bad records).

    Raises:
        BadInputError: every record in the batch was bad and skipped.
    """
    if all(s is None for s in samples):
        raise BadInputError("every record in this batch was bad and skipped (skip_bad)")
    return collate_batch(samples)


class ECGDataModule(PairedDataModule):
    """Lightning data module for ECG-report pretraining.

    Args:
        dataset: ``ptbxl``, ``mimic``, ``ptbdb`` or ``manifest`` (ignored when ``store`` is given).
        root: dataset folder (manifest file for ``manifest``).
        store: a prepared store folder (``vlp-ecg prepare``); preferred for training.
        shards: a prepared shard root (``vlp-ecg prepare --format shards``), a folder or a URL such as
            ``s3://bucket/ecg/mimic`` holding ``train``/``val``/``test``: streamed (litdata), for data too large
            for one memory-mapped file or kept in object storage. ``target_fs`` and ``duration`` must match the
            shards' preprocessing (checked against their manifest).
        storage_options: credentials/endpoint for remote ``shards`` (boto3 keywords, e.g. ``endpoint_url``);
            default: the AWS environment variables/profiles. Never put secrets in a committed config.
        cache_dir: local cache for remote shards (default: litdata's).
        sampling_rate: PTB-XL ``records100`` or ``records500``.
        labels: PTB-XL label level.
        text: PTB-XL text source (``report`` or ``statements``).
        target_fs: model input rate (Hz).
        duration: model input length (s).
        expected_fs: reject records at another rate.
        normalize: normalisation mode.
        augment: training augmentation specs (see :func:`vlp_ecg.transforms.build_transforms`).
        lead_mask_p: training random lead masking probability.
        skip_bad: skip (and count) bad records.
        max_beats: R peaks per record.
        batch_size / num_workers / seed: loader settings.
        missing / flat: lead policies for WFDB sources (see :func:`vlp_ecg.io.read_record`).
        nan / max_nan_gap / max_nan_fraction: invalid-sample policy for WFDB sources (see :class:`LoadConfig`).
        shuffle_pairs: control runs only: train on ECGs paired with other records' reports.

    Training items are drawn as ``(epoch, index)`` (core's :class:`~vlp_core.training.EpochIndexSampler`), so
    augmentation depends on ``(seed, epoch, index)`` only, also inside persistent workers. Shard training
    draws it from ``(seed, epoch, global sample index)``.
    """

    epoch_index = True

    def __init__(
        self,
        dataset: str = "ptbxl",
        root: str | None = None,
        store: str | None = None,
        shards: str | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        sampling_rate: int = 100,
        labels: str = "superclass",
        text: str = "report",
        target_fs: float = 100.0,
        duration: float = 10.0,
        expected_fs: float | None = None,
        normalize: str = "zscore",
        augment: list[dict[str, Any]] | None = None,
        lead_mask_p: float = 0.0,
        skip_bad: bool = False,
        max_beats: int = 40,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        missing: str = "error",
        flat: str = "error",
        nan: str = "interpolate",
        max_nan_gap: float = 0.05,
        max_nan_fraction: float = 0.01,
        shuffle_pairs: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.shuffle_pairs = shuffle_pairs
        if store is None and root is None and shards is None:
            raise ValueError("ECGDataModule needs a prepared `store`, prepared `shards` or a dataset `root`")
        if store is not None and shards is not None:
            raise ValueError(f"ECGDataModule: give a memmap `store` ({store}) or `shards` ({shards}), not both")
        self.dataset, self.root, self.store = dataset, root, store
        self.shards, self.storage_options, self.cache_dir = shards, storage_options, cache_dir
        self.sampling_rate, self.label_level, self.text = sampling_rate, labels, text
        self.cfg = LoadConfig(target_fs=target_fs, duration=duration, expected_fs=expected_fs, missing=missing,
                              flat=flat, nan=nan, max_nan_gap=max_nan_gap, max_nan_fraction=max_nan_fraction)  # fmt: skip
        self.normalize, self.augment, self.lead_mask_p = normalize, augment, lead_mask_p
        self.skip_bad, self.max_beats = skip_bad, max_beats

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            self._check_model_fs()  # also when set up earlier by hand, before the trainer attached the model
            return
        if self.shards is not None:
            self._setup_shards()
            self._check_model_fs()
            return
        if self.store is not None:
            source: ECGStore | ECGIndex = ECGStore(self.store)
        else:
            kwargs: dict[str, Any] = {}
            if self.dataset == "ptbxl":
                kwargs = {"sampling_rate": self.sampling_rate, "labels": self.label_level, "text": self.text}
            source = index_dataset(self.dataset, self.root, **kwargs)
        common = {"normalize": self.normalize, "max_beats": self.max_beats, "cfg": self.cfg, "skip_bad": self.skip_bad}
        self.train_set = ECGTextDataset(source, "train", augment=self.augment, lead_mask_p=self.lead_mask_p,
                                        seed=self.seed, shuffle_pairs=self.shuffle_pairs, **common)  # fmt: skip
        self.val_set = ECGTextDataset(source, "val", **common) if (source_has(source, "val")) else None
        self.test_set = ECGTextDataset(source, "test", **common) if (source_has(source, "test")) else None
        self.data_fs = source.fs if isinstance(source, ECGStore) else float(self.cfg.target_fs)
        self._check_model_fs()

    def _setup_shards(self) -> None:
        from vlp_core.data.shards import ShardConfigError, ShardDataset, ShardError

        assert self.shards is not None
        expect = {"target_fs": float(self.cfg.target_fs), "duration": float(self.cfg.duration)}
        common: dict[str, Any] = {"expect_domain": "ecg", "expect_config": expect, "seed": self.seed,
                                  "storage_options": self.storage_options, "cache_dir": self.cache_dir}  # fmt: skip

        def split(name: str, train: bool, classes: list[str] | None, chash: str | None) -> ShardDataset | None:
            url = f"{self.shards.rstrip('/')}/{name}"
            try:
                ds = ShardDataset(url, expect_split=name, expect_config_hash=chash, train=train, **common)
            except ShardError as exc:
                if train or "missing" not in str(exc) or "vlp_shards.json" not in str(exc):
                    raise
                return None  # no such split
            item = ECGShardItem(classes or ds.extra.get("classes", []), ds.config["target_fs"], self.normalize,
                                self.augment if train else None, self.lead_mask_p if train else 0.0, self.max_beats,
                                self.seed)  # fmt: skip
            ds.vlp_transform = item
            return ds

        train = split("train", True, None, None)
        assert train is not None
        classes = list(train.extra.get("classes", []))
        try:  # every split must come from the same preprocessing as train
            self.val_set = split("val", False, classes, train.manifest["config_hash"])
            self.test_set = split("test", False, classes, train.manifest["config_hash"])
        except ShardConfigError as exc:
            raise ShardConfigError(f"{exc} (train split has hash {train.manifest['config_hash']})") from None
        self.train_set = train
        self.data_fs = float(train.config["target_fs"])

    def _check_model_fs(self) -> None:
        """Refuse to train when the model's ECG tower expects another rate than the data provides (beat windows and
        receptive fields are in samples, so a 500 Hz store fed to a 100 Hz model trains silently wrong)."""
        trainer = getattr(self, "trainer", None)
        model = getattr(trainer, "lightning_module", None) if trainer is not None else None
        towers = getattr(model, "towers", None)
        tower = towers["ecg"] if towers is not None and "ecg" in towers else None
        model_fs = getattr(tower, "fs", None)
        if model_fs is not None and abs(float(model_fs) - self.data_fs) > 1e-6:
            where = f"store {self.store}" if self.store is not None else "target_fs of the data module"
            raise ValueError(
                f"the model's ECG tower expects {float(model_fs):g} Hz but the {where} is at {self.data_fs:g} Hz; "
                "set model fs (e.g. --model.init_args.fs) to the data rate or prepare the store at the model's rate"
            )

    def collate(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_ecg(samples)


def source_has(source: ECGStore | ECGIndex, split: str) -> bool:
    frame = source.index if isinstance(source, ECGStore) else source.frame
    return bool((frame["split"] == split).any())
