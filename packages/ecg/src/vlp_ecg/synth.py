"""Physiologically consistent synthetic 12-lead ECGs with labels and PTB-XL-style reports.

Each beat is a sum of Gaussian waves (P, Q, R, S, T, plus class-specific extras). Waves are defined on 8
independent leads (I, II, V1-V6); the other limb leads are derived **exactly** by Einthoven/Goldberger:
III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2.

Classes (PTB-XL SCP codes): ``SR``, ``SBRAD``, ``STACH``, ``AFIB`` (irregular RR, no P waves, f-waves),
``1AVB`` (PR > 200 ms), ``PVC`` (wide early beat without P, compensatory pause), ``CLBBB`` / ``CRBBB``
(QRS >= 120 ms with the typical V1/V6 morphology), ``STE_`` (ST elevation in a territory), ``NORM``.

:func:`make_fake_ptbxl` and :func:`make_fake_mimic` write real WFDB files in the PTB-XL and MIMIC-IV-ECG folder
and CSV layouts, so demos and tests exercise the same readers and indexers as real data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from vlp_ecg.io import STANDARD_LEADS, write_record

__all__ = [
    "CLASSES",
    "RHYTHMS",
    "SCP_STATEMENTS",
    "SyntheticECG",
    "derive_limb_leads",
    "make_fake_mimic",
    "make_fake_ptbxl",
    "make_report",
    "sample_labels",
    "synthesize_ecg",
]

CLASSES: tuple[str, ...] = ("SR", "SBRAD", "STACH", "AFIB", "1AVB", "PVC", "CLBBB", "CRBBB", "STE_")
"""Labelled classes the generator produces (``NORM`` is added when nothing but sinus rhythm is present)."""
RHYTHMS: tuple[str, ...] = ("SR", "SBRAD", "STACH", "AFIB")
"""The mutually exclusive rhythm classes (exactly one per record)."""

# code -> (description, diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass, category)
SCP_STATEMENTS: dict[str, tuple] = {
    "NORM": ("normal ECG", 1.0, None, None, "NORM", "NORM", "Normal/abnormal"),
    "1AVB": ("first degree AV block", 1.0, None, None, "CD", "_AVB", "Conduction disturbances"),
    "CLBBB": ("complete left bundle branch block", 1.0, None, None, "CD", "CLBBB", "Conduction disturbances"),
    "CRBBB": ("complete right bundle branch block", 1.0, None, None, "CD", "CRBBB", "Conduction disturbances"),
    "PVC": ("ventricular premature complex", None, 1.0, None, None, None, "Ectopic beats"),
    "STE_": ("non-specific ST elevation", None, 1.0, None, None, None, "Basic measurement"),
    "SR": ("sinus rhythm", None, None, 1.0, None, None, "Rhythm"),
    "SBRAD": ("sinus bradycardia", None, None, 1.0, None, None, "Rhythm"),
    "STACH": ("sinus tachycardia", None, None, 1.0, None, None, "Rhythm"),
    "AFIB": ("atrial fibrillation", None, None, 1.0, None, None, "Rhythm"),
}

_PHRASES: dict[str, list[str]] = {
    "SR": ["sinus rhythm", "normal sinus rhythm", "regular sinus rhythm", "rhythm is sinus"],
    "SBRAD": ["sinus bradycardia", "slow sinus rhythm", "sinus rhythm with bradycardia", "marked sinus bradycardia"],
    "STACH": ["sinus tachycardia", "rapid sinus rhythm", "sinus rhythm with tachycardia", "fast sinus rhythm"],
    "AFIB": [
        "atrial fibrillation",
        "atrial fibrillation with irregular ventricular response",
        "irregularly irregular rhythm consistent with atrial fibrillation",
        "afib, no p waves visible",
    ],
    "1AVB": ["first degree av block", "prolonged pr interval", "1st degree atrioventricular block", "av block i"],
    "PVC": [
        "premature ventricular contractions",
        "ventricular premature beats",
        "occasional ventricular extrasystoles",
        "ventricular ectopic beats",
    ],
    "CLBBB": ["left bundle branch block", "complete left bundle branch block", "lbbb with wide qrs"],
    "CRBBB": ["right bundle branch block", "complete right bundle branch block", "rbbb, rsr' pattern in v1"],
    "STE_": ["st elevation", "st segment elevation", "st elevation, consider acute injury", "elevated st segments"],
    "NORM": ["normal ecg", "otherwise normal ecg", "ecg within normal limits"],
}
_TERRITORY_TEXT = {"anterior": "in the anterior leads", "inferior": "in the inferior leads"}
_FILLER = ["unconfirmed report", "no previous ecg available for comparison", "", "", ""]

# Wave amplitudes (mV) on the independent leads [I, II, V1, V2, V3, V4, V5, V6].
_BASE = {
    "P": np.array([0.08, 0.15, 0.05, 0.08, 0.08, 0.08, 0.08, 0.07]),
    "Q": np.array([-0.05, -0.08, 0.0, 0.0, -0.02, -0.05, -0.10, -0.08]),
    "R": np.array([0.60, 1.00, 0.25, 0.55, 0.85, 1.30, 1.20, 0.90]),
    "S": np.array([-0.10, -0.20, -0.90, -1.20, -0.70, -0.35, -0.15, -0.10]),
    "T": np.array([0.20, 0.30, 0.05, 0.40, 0.45, 0.40, 0.30, 0.25]),
}
_INDEP = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def derive_limb_leads(i: np.ndarray, ii: np.ndarray) -> dict[str, np.ndarray]:
    """Einthoven/Goldberger: the six limb leads from leads I and II.

    Args:
        i: lead I, any shape.
        ii: lead II, same shape.

    Returns:
        Dict with I, II, III, aVR, aVL, aVF.
    """
    return {"I": i, "II": ii, "III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}


@dataclass
class SyntheticECG:
    """A generated record: ``signal`` (12, T) mV in :data:`STANDARD_LEADS` order, R-peak sample indices, labels."""

    signal: np.ndarray
    fs: float
    rpeaks: np.ndarray
    labels: list[str]
    report: str
    params: dict = field(default_factory=dict)


def sample_labels(rng: np.random.Generator) -> list[str]:
    """Draw a consistent label set (one rhythm plus optional conduction/morphology findings)."""
    rhythm = str(rng.choice(["SR", "SBRAD", "STACH", "AFIB"], p=[0.34, 0.22, 0.22, 0.22]))
    labels = [rhythm]
    if rhythm != "AFIB" and rng.random() < 0.25:
        labels.append("1AVB")
    if rng.random() < 0.22:
        labels.append("PVC")
    u = rng.random()
    if u < 0.17:
        labels.append("CLBBB")
    elif u < 0.34:
        labels.append("CRBBB")
    if rng.random() < 0.22:
        labels.append("STE_")
    return labels


def make_report(labels: Sequence[str], rng: np.random.Generator, heart_rate: float | None = None, **kw) -> str:
    """PTB-XL-like English report from labels, with varied phrasing and order of secondary statements.

    Args:
        labels: SCP codes.
        rng: random generator.
        heart_rate: optional mean rate to mention.
        kw: ``territory`` for STE_.
    """
    rhythm = [c for c in labels if c in ("SR", "SBRAD", "STACH", "AFIB")]
    others = [c for c in labels if c not in rhythm and c != "NORM"]
    rng.shuffle(others)
    sentences = [str(rng.choice(_PHRASES[c])) for c in rhythm]
    for c in others:
        s = str(rng.choice(_PHRASES[c]))
        if c == "STE_" and kw.get("territory") and rng.random() < 0.6:
            s = f"{s} {_TERRITORY_TEXT[kw['territory']]}"
        sentences.append(s)
    if not others and "AFIB" not in rhythm:
        sentences.append(str(rng.choice(_PHRASES["NORM"])))
    if heart_rate is not None and rng.random() < 0.4:
        sentences.insert(1, f"ventricular rate {int(round(heart_rate))} bpm")
    filler = str(rng.choice(_FILLER))
    if filler:
        sentences.append(filler)
    return ". ".join(sentences) + "."


def _gauss(t: np.ndarray, centers: np.ndarray, sigmas: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Sum of Gaussians: centers/sigmas (W,), amps (W, L) -> (L, T)."""
    g = np.exp(-0.5 * ((t[None, :] - centers[:, None]) / sigmas[:, None]) ** 2)  # (W, T)
    return amps.T @ g


def synthesize_ecg(
    labels: Sequence[str] | None = None,
    *,
    fs: float = 500.0,
    duration: float = 10.0,
    seed: int | np.random.Generator = 0,
    noise: bool = True,
) -> SyntheticECG:
    """Generate one 12-lead ECG.

    Args:
        labels: SCP codes (see :data:`CLASSES`); ``None`` draws a random consistent set.
        fs: sampling rate (Hz).
        duration: seconds.
        seed: int seed or generator.
        noise: add Gaussian noise and baseline wander.

    Returns:
        :class:`SyntheticECG` with ``signal`` (12, round(fs*duration)) float32 mV.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = list(labels) if labels is not None else sample_labels(rng)
    lab = set(labels)
    n = int(round(fs * duration))
    t = np.arange(n) / fs
    # Per-record morphology variation: lognormal gains per wave/lead and a small electrical-axis shift.
    amp = {k: v * rng.lognormal(0.0, 0.12, v.shape) for k, v in _BASE.items()}
    axis = rng.normal(0.0, 0.15)
    for k in amp:
        amp[k][0] *= 1 + axis
        amp[k][1] *= 1 - axis / 2
    # Heart rate and RR series.
    if "AFIB" in lab:
        hr = rng.uniform(70, 140)
        cv = rng.uniform(0.15, 0.3)
        sig = np.sqrt(np.log(1 + cv**2))
        rr = rng.lognormal(np.log(60 / hr) - sig**2 / 2, sig, size=int(duration * 4) + 10)
        rr = np.clip(rr, 0.28, 2.0)
    else:
        hr = {"SBRAD": rng.uniform(40, 57), "STACH": rng.uniform(105, 150)}.get(
            next((c for c in labels if c in ("SBRAD", "STACH")), "SR"), rng.uniform(62, 98)
        )
        rr = 60 / hr * (1 + rng.normal(0, 0.02, size=int(duration * 4) + 10))
    start = rng.uniform(0.05, 0.6)
    beats = start + np.concatenate([[0.0], np.cumsum(rr)])
    beats = beats[beats < duration - 0.05]
    kinds = np.zeros(len(beats), dtype=int)  # 0 normal, 1 PVC
    if "PVC" in lab and len(beats) > 4:
        n_pvc = int(rng.integers(1, 4))
        cand = rng.choice(np.arange(2, len(beats) - 1), size=min(n_pvc, len(beats) - 3), replace=False)
        for j in sorted(cand):
            if kinds[j - 1] or kinds[j + 1 if j + 1 < len(beats) else j]:
                continue
            prev_rr = beats[j] - beats[j - 1]
            new_time = beats[j - 1] + 0.6 * prev_rr
            shift = (beats[j - 1] + 2 * prev_rr) - beats[j + 1] if j + 1 < len(beats) else 0.0
            beats[j] = new_time
            beats[j + 1 :] += shift  # compensatory pause
            kinds[j] = 1
        keep = beats < duration - 0.05
        beats, kinds = beats[keep], kinds[keep]
    pr = rng.uniform(0.22, 0.32) if "1AVB" in lab else rng.uniform(0.13, 0.18)
    qrs_w = 1.0
    if "CLBBB" in lab or "CRBBB" in lab:
        qrs_w = rng.uniform(2.0, 2.6)
    territory = str(rng.choice(["anterior", "inferior"])) if "STE_" in lab else None
    ste = np.zeros(8)
    if territory == "anterior":
        ste[2:6] = rng.uniform(0.15, 0.35) * np.array([0.8, 1.0, 1.0, 0.7])
    elif territory == "inferior":
        ste[:2] = rng.uniform(0.15, 0.35) * np.array([-0.2, 1.0])
    centers, sigmas, amps = [], [], []

    def add(c: float, s: float, a: np.ndarray) -> None:
        centers.append(c)
        sigmas.append(s)
        amps.append(a)

    for b, kind in zip(beats, kinds):
        rr_loc = 60 / hr
        qt_t = 0.26 * np.sqrt(rr_loc) + 0.04
        if kind == 1:  # PVC: wide, bizarre, no P, discordant T
            pvc_dir = np.array([-0.9, 1.2, -1.0, -0.8, 0.5, 1.3, 1.4, 1.2]) * rng.uniform(0.9, 1.3)
            add(b, 0.035, pvc_dir)
            add(b + 0.32, 0.07, -0.35 * np.sign(pvc_dir))
            continue
        if "AFIB" not in lab:
            add(b - pr, 0.022, amp["P"])
        if "CLBBB" in lab:
            notch = np.array([1.0, 0.6, 0.0, 0.0, 0.2, 0.6, 1.0, 1.0])
            add(b - 0.02, 0.018 * qrs_w, amp["R"] * np.array([0.7, 0.5, 0.1, 0.1, 0.3, 0.6, 0.8, 0.8]))
            add(b + 0.03, 0.018 * qrs_w, amp["R"] * notch * 0.9)
            add(b + 0.02, 0.02 * qrs_w, np.array([0, 0, -1.3, -1.6, -1.2, -0.4, 0, 0]) * rng.uniform(0.9, 1.2))
            add(b + qt_t + 0.04, 0.06, -0.6 * np.abs(amp["T"]) * np.array([1, 0.6, -1.5, -1.2, -0.6, 0.5, 1, 1]))
        elif "CRBBB" in lab:
            add(b - 0.03, 0.01, amp["Q"])
            add(b, 0.012, amp["R"])
            add(b + 0.025, 0.012, amp["S"] * np.array([1, 1, 0.6, 0.6, 1, 1, 1, 1]))
            add(b + 0.07, 0.02, np.array([0, 0, 0.7, 0.5, 0.15, 0, 0, 0]) * rng.uniform(0.8, 1.2))  # R' in V1-V2
            add(b + 0.07, 0.025, np.array([-0.35, -0.2, 0, 0, -0.1, -0.25, -0.35, -0.35]))  # wide terminal S
            add(b + qt_t + 0.02, 0.05, amp["T"] * np.array([1, 1, -3, -1, 1, 1, 1, 1]))
        else:
            add(b - 0.03, 0.009, amp["Q"])
            add(b, 0.011, amp["R"])
            add(b + 0.028, 0.01, amp["S"])
            add(b + qt_t, 0.05, amp["T"])
        if territory is not None:
            add(b + 0.12, 0.05, ste)
            add(b + 0.07, 0.03, ste * 0.6)
    x8 = _gauss(t, np.array(centers), np.array(sigmas), np.array(amps)) if centers else np.zeros((8, n))
    if "AFIB" in lab:
        f = rng.uniform(4, 9)
        fa = rng.uniform(0.05, 0.1)
        phase = np.cumsum(2 * np.pi * (f + 0.3 * np.sin(2 * np.pi * 0.2 * t)) / fs)
        fw = fa * np.sin(phase + rng.uniform(0, 2 * np.pi))
        x8 += np.array([0.3, 0.8, 1.0, 0.6, 0.3, 0.2, 0.15, 0.1])[:, None] * fw[None]
    if noise:
        x8 += rng.normal(0, rng.uniform(0.005, 0.02), x8.shape)
        bw = rng.uniform(0.02, 0.1) * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3))
        x8 += rng.uniform(0.5, 1.0, (8, 1)) * bw[None]
    limbs = derive_limb_leads(x8[0], x8[1])
    sig12 = np.stack([limbs[k] for k in ("I", "II", "III", "aVR", "aVL", "aVF")] + list(x8[2:]), 0)
    rpk = np.round(beats * fs).astype(np.int64)
    rpk = rpk[(rpk >= 0) & (rpk < n)]
    if set(labels) == {"SR"}:
        labels = ["NORM", "SR"]
    report = make_report(labels, rng, heart_rate=60 / float(np.median(np.diff(beats))) if len(beats) > 2 else hr,
                         territory=territory)  # fmt: skip
    params = {"hr": float(hr), "pr": float(pr), "territory": territory, "pvc_beats": kinds.tolist()}
    return SyntheticECG(sig12.astype(np.float32), float(fs), rpk, list(labels), report, params)


def _scp_statements_frame() -> pd.DataFrame:
    cols = ["description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
            "Statement Category"]  # fmt: skip
    return pd.DataFrame.from_dict(SCP_STATEMENTS, orient="index", columns=cols)


def make_fake_ptbxl(
    root: str | os.PathLike,
    n: int = 100,
    *,
    rates: Sequence[int] = (100,),
    duration: float = 10.0,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a PTB-XL-shaped dataset of synthetic ECGs.

    Layout: ``ptbxl_database.csv`` (index ``ecg_id``; ``patient_id, age, sex, report, scp_codes, strat_fold,
    filename_lr, filename_hr`` ...), ``scp_statements.csv``, ``records100/00000/00001_lr.{hea,dat}`` and/or
    ``records500/00000/00001_hr.{hea,dat}`` (format 16, 1 uV/LSB, upper-case lead names as in PTB-XL).

    Args:
        root: output folder.
        n: number of records.
        rates: which of 100 and 500 Hz to write.
        duration: seconds per record.
        seed: seed.
        progress: show a progress bar.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ptbxl_names = [n.upper() if n.startswith("a") else n for n in STANDARD_LEADS]  # AVR AVL AVF as in PTB-XL
    rows = []
    for k in tqdm(range(n), desc="synthetic PTB-XL", disable=not progress):
        ecg_id = k + 1
        labels = sample_labels(rng)
        rec_seed = int(rng.integers(0, 2**31))
        folder = f"{(ecg_id // 1000) * 1000:05d}"
        fn_lr = f"records100/{folder}/{ecg_id:05d}_lr"
        fn_hr = f"records500/{folder}/{ecg_id:05d}_hr"
        report = None
        for rate in rates:
            ecg = synthesize_ecg(labels, fs=float(rate), duration=duration, seed=rec_seed)
            report = ecg.report
            write_record(root / (fn_lr if rate == 100 else fn_hr), ecg.signal, rate, ptbxl_names)
        codes = {c: (0.0 if c in ("SR", "SBRAD", "STACH", "AFIB") else 100.0) for c in ecg.labels}
        rows.append(
            {
                "ecg_id": ecg_id,
                "patient_id": float(10000 + k),
                "age": float(rng.integers(20, 90)),
                "sex": int(rng.integers(0, 2)),
                "report": report,
                "scp_codes": repr(codes),
                "strat_fold": int(k % 10) + 1,
                "validated_by_human": True,
                "filename_lr": fn_lr,
                "filename_hr": fn_hr,
            }
        )
    pd.DataFrame(rows).set_index("ecg_id").to_csv(root / "ptbxl_database.csv")
    _scp_statements_frame().to_csv(root / "scp_statements.csv")
    return root


def make_fake_mimic(root: str | os.PathLike, n: int = 10, *, duration: float = 10.0, seed: int = 0) -> Path:
    """Write a MIMIC-IV-ECG-shaped dataset (500 Hz, lead order I, II, III, aVR, **aVF, aVL**, V1-V6).

    Layout: ``record_list.csv``, ``machine_measurements.csv`` (``report_0..report_17`` with blanks, numeric
    measurements with the 29999 missing code) and ``files/p1000/p100000xx/sNNNNNNNN/NNNNNNNN.{hea,dat}``.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    order = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    idx = [STANDARD_LEADS.index(x) for x in order]
    rec_rows, mm_rows = [], []
    for k in range(n):
        subject, study = 10000032 + k, 40000000 + 7 * k
        ecg = synthesize_ecg(None, fs=500.0, duration=duration, seed=int(rng.integers(0, 2**31)))
        rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        write_record(root / rel, ecg.signal[idx], 500, order)
        rec_rows.append({"subject_id": subject, "study_id": study, "file_name": study,
                         "ecg_time": f"2180-07-{1 + k % 28:02d} 08:00:00", "path": rel})  # fmt: skip
        sentences = ecg.report.rstrip(".").split(". ")
        mm = {"subject_id": subject, "study_id": study, "cart_id": 6848, "ecg_time": rec_rows[-1]["ecg_time"]}
        slots = sorted(rng.choice(18, size=len(sentences), replace=False))  # non-contiguous report columns
        for j in range(18):
            mm[f"report_{j}"] = None
        for s, j in zip(sentences, slots):
            mm[f"report_{j}"] = s
        mm.update({"bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter",
                   "rr_interval": int(60000 / ecg.params["hr"]), "p_onset": 29999 if "AFIB" in ecg.labels else 40,
                   "p_end": 29999 if "AFIB" in ecg.labels else 120, "qrs_onset": 200, "qrs_end": 290, "t_end": 600,
                   "p_axis": 29999, "qrs_axis": 45, "t_axis": 40})  # fmt: skip
        mm_rows.append(mm)
    pd.DataFrame(rec_rows).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(mm_rows).to_csv(root / "machine_measurements.csv", index=False)
    return root
