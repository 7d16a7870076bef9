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
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from vlp_ecg.io import STANDARD_LEADS, write_record

__all__ = [
    "CLASSES",
    "REPORT_STYLES",
    "Measurements",
    "RHYTHMS",
    "SCP_STATEMENTS",
    "SyntheticECG",
    "derive_limb_leads",
    "make_fake_mimic",
    "make_fake_ptbxl",
    "make_report",
    "measure",
    "report_vocabulary",
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

# Report phrase bank per class, in three registers: machine statements (MIMIC-IV-ECG / GE-Marquette 12SL style),
# short PTB-XL-style interpretations (abbreviations, lower case) and cardiologist free text. The zero-shot
# *descriptive* prompts in :mod:`vlp_ecg.eval` are written so that none of their content words occurs here (a test
# checks it), so scoring with them measures transfer, not string matching.
_PHRASES: dict[str, dict[str, list[str]]] = {
    "SR": {
        "machine": ["Sinus rhythm", "Normal sinus rhythm", "Sinus rhythm, rate within limits"],
        "short": ["sr", "sinus rhythm", "nsr", "regular sinus rhythm"],
        "free": ["The rhythm is sinus", "Underlying rhythm is sinus", "Sinus mechanism"],
    },
    "SBRAD": {
        "machine": ["Sinus bradycardia", "Marked sinus bradycardia"],
        "short": ["sb", "sinus brady", "sinus bradycardia", "bradycardic sinus rhythm"],
        "free": ["Sinus bradycardia is present", "The rhythm is sinus bradycardia", "Sinus mechanism with bradycardia"],
    },
    "STACH": {
        "machine": ["Sinus tachycardia"],
        "short": ["st", "sinus tachy", "sinus tachycardia", "tachycardic sinus rhythm"],
        "free": ["Sinus tachycardia is present", "The rhythm is sinus tachycardia", "Sinus mechanism with tachycardia"],
    },
    "AFIB": {
        "machine": [
            "Atrial fibrillation",
            "Atrial fibrillation with rapid ventricular response",
            "Atrial fibrillation with controlled ventricular response",
        ],
        "short": ["af", "afib", "a-fib", "atrial fibrillation", "vorhofflimmern (atrial fibrillation)"],
        "free": [
            "The rhythm is atrial fibrillation",
            "Irregularly irregular rhythm, atrial fibrillation",
            "Atrial fibrillation, fibrillatory waves seen",
        ],
    },
    "1AVB": {
        "machine": ["Prolonged PR interval", "1st degree A-V block", "First degree AV block"],
        "short": ["1avb", "av block i", "avb 1st degree", "first-degree av block", "pr prolonged"],
        "free": [
            "There is first degree atrioventricular block",
            "The PR interval is prolonged",
            "AV conduction is delayed (first degree block)",
        ],
    },
    "PVC": {
        "machine": [
            "with occasional premature ventricular complexes",
            "Premature ventricular complexes",
            "with frequent ventricular premature complexes",
        ],
        "short": ["pvc", "pvcs", "vpb", "vpbs", "ventricular extrasystoles", "ves"],
        "free": [
            "Occasional ventricular ectopic beats are seen",
            "There are isolated PVCs",
            "Single ventricular extrasystoles noted",
        ],
    },
    "CLBBB": {
        "machine": ["Left bundle branch block", "Complete left bundle branch block"],
        "short": ["lbbb", "clbbb", "complete lbbb", "left bundle branch block"],
        "free": [
            "There is a complete left bundle branch block",
            "Left bundle branch block pattern",
            "Wide QRS with LBBB morphology",
        ],
    },
    "CRBBB": {
        "machine": ["Right bundle branch block", "Complete right bundle branch block"],
        "short": ["rbbb", "crbbb", "complete rbbb", "right bundle branch block"],
        "free": [
            "There is a complete right bundle branch block",
            "Right bundle branch block pattern",
            "Wide QRS with RBBB morphology, rsR' in V1",
        ],
    },
    "STE_": {
        "machine": ["ST elevation", "ST elevation, consider acute injury", "Marked ST elevation"],
        "short": ["ste", "st elevation", "st-elevation", "st hebung (st elevation)"],
        "free": ["There is ST segment elevation", "ST segments are elevated", "Significant ST elevation"],
    },
    "NORM": {
        "machine": ["Normal ECG", "Within normal limits"],
        "short": ["normal ecg", "norm", "ecg within normal limits"],
        "free": ["Normal tracing", "This is a normal ECG", "No abnormality detected"],
    },
}
_TERRITORY_TEXT = {
    "anterior": ["in the anterior leads", "in V1-V4", "anteriorly", "anterior leads"],
    "inferior": ["in the inferior leads", "in II, III, aVF", "inferiorly", "inferior leads"],
}
_HEDGES = ["possible", "probable", "consider", "borderline", "suggests", "cannot rule out"]
# Hedges only ever apply to the less certain findings (a rhythm is never hedged in 12SL statements).
_HEDGEABLE = ("1AVB", "STE_", "CLBBB", "CRBBB", "PVC")
# Normal findings and negations, used only when none of the classes they negate is present.
_NEGATIONS: dict[tuple[str, ...], list[str]] = {
    ("STE_",): ["no acute ST changes", "no ST elevation", "no acute ST-T changes", "ST segments unremarkable"],
    ("PVC",): ["no ectopy", "no ventricular ectopy seen", "no PVCs"],
    ("1AVB",): ["PR interval normal", "no AV block", "AV conduction normal"],
    ("CLBBB", "CRBBB"): ["QRS duration normal", "no bundle branch block", "narrow QRS complexes"],
    ("AFIB",): ["P waves present", "no atrial fibrillation"],
}
# Label-free sentences: negations of findings the generator never produces, comparisons, report status, technique.
_NO_LABEL = [
    "no evidence of pre-excitation", "no evidence of Brugada pattern", "QT interval within normal limits",
    "compared with the previous tracing, no significant change", "compared with ECG of last week, rate has changed",
    "no previous ECG available for comparison", "unconfirmed report", "unconfirmed diagnosis",
    "confirmed by cardiology", "technically fair study", "baseline artifact present", "borderline voltage",
    "possible left atrial abnormality", "nonspecific T wave flattening", "lead reversal excluded",
    "interpretation requires clinical correlation", "computer interpretation, review advised",
]  # fmt: skip
REPORT_STYLES: tuple[str, ...] = ("machine", "short", "free")
"""Report registers :func:`make_report` mixes: MIMIC-IV-ECG machine statements, PTB-XL short, cardiologist text."""


def _phrase(code: str, style: str, rng: np.random.Generator) -> str:
    bank = _PHRASES[code]
    # Mostly the register's own wording, sometimes another register's (real reports mix them).
    pool = bank[style] if rng.random() < 0.75 else bank[str(rng.choice(list(bank)))]
    return str(rng.choice(pool))


def report_vocabulary() -> set[str]:
    """Every lower-cased word any report can contain (phrase bank, territories, hedges, negations, fillers and the
    measurement lines' words): the reference for the zero-shot prompt-disjointness check."""
    texts: list[str] = []
    for bank in _PHRASES.values():
        for pool in bank.values():
            texts += pool
    for pool in list(_TERRITORY_TEXT.values()) + list(_NEGATIONS.values()):
        texts += pool
    texts += _HEDGES + _NO_LABEL + list(_MEASUREMENT_WORDS) + list(_SUMMARY.values())[0] + list(_SUMMARY.values())[1]
    texts += list(_SUMMARY["borderline"]) + _FREE_GLUE
    return {w for t in texts for w in _words(t)}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*|[0-9]+", text.lower())


_SUMMARY = {
    "normal": ["Normal ECG", "normal ecg", "Within normal limits"],
    "abnormal": ["Abnormal ECG", "abnormal ecg", "Abnormal tracing"],
    "borderline": ["Borderline ECG", "borderline ecg"],
}
_FREE_GLUE = ["There is", "are seen", "is present", "at", "bpm", "with", "and", "also", "otherwise", "the"]
_MEASUREMENT_WORDS = ("Vent. rate BPM", "PR interval ms", "QRS duration ms", "QT/QTc ms", "P-R-T axes",
                      "Ventricular rate /min", "rate", "PR", "QRS", "QT", "QTc", "axis")  # fmt: skip


@dataclass
class Measurements:
    """Interval and axis measurements of a generated record (what an ECG cart prints above its statements).

    ``rate`` (ventricular, from the R peaks), ``pr``, ``qrs``, ``qt``, ``qtc`` (Bazett) in ms, ``p_axis``,
    ``qrs_axis``, ``t_axis`` in degrees; ``None`` where not measurable (PR and P axis in atrial fibrillation).
    """

    rate: int
    pr: int | None
    qrs: int
    qt: int
    qtc: int
    p_axis: int | None
    qrs_axis: int
    t_axis: int

    def line(self, style: str) -> str:
        """The measurement line as a machine (12SL) or cardiologist would write it."""
        pr = "*" if self.pr is None else str(self.pr)
        pa = "*" if self.p_axis is None else str(self.p_axis)
        if style == "machine":
            return (f"Vent. rate {self.rate} BPM. PR interval {pr} ms. QRS duration {self.qrs} ms. "
                    f"QT/QTc {self.qt}/{self.qtc} ms. P-R-T axes {pa} {self.qrs_axis} {self.t_axis}")  # fmt: skip
        return f"Ventricular rate {self.rate}/min, PR {pr} ms, QRS {self.qrs} ms, QTc {self.qtc} ms"


def make_report(
    labels: Sequence[str],
    rng: np.random.Generator,
    heart_rate: float | None = None,
    *,
    measurements: Measurements | None = None,
    style: str | None = None,
    territory: str | None = None,
    hedge_p: float = 0.15,
    negation_p: float = 0.35,
    filler_p: float = 0.5,
) -> str:
    """A realistic English ECG report for a label set.

    Mixed registers (:data:`REPORT_STYLES`): machine statements with a measurement line, short PTB-XL-style
    interpretations with abbreviations, cardiologist free text. Findings come in random order and may be hedged
    (``possible``, ``consider``); absent findings are sometimes negated (``no acute ST changes``); label-free
    sentences (comparisons, report status, technical remarks) are mixed in.

    Args:
        labels: SCP codes (see :data:`CLASSES`).
        rng: random generator.
        heart_rate: mean ventricular rate, used when ``measurements`` is not given.
        measurements: :class:`Measurements` of the signal (a measurement line is written in machine/free style).
        style: one of :data:`REPORT_STYLES`; ``None`` draws one (machine 45 %, short 30 %, free 25 %).
        territory: ``"anterior"``/``"inferior"`` for ``STE_``.
        hedge_p / negation_p / filler_p: probabilities of a hedge per hedgeable finding, of each applicable
            negation, and of a label-free sentence.
    """
    style = style or str(rng.choice(REPORT_STYLES, p=[0.45, 0.3, 0.25]))
    if style not in REPORT_STYLES:
        raise ValueError(f"style must be one of {REPORT_STYLES}, got {style!r}")
    lab = [c for c in labels if c in _PHRASES]
    rhythm = [c for c in lab if c in RHYTHMS]
    others = [c for c in lab if c not in rhythm and c != "NORM"]
    rng.shuffle(others)
    sentences = [_phrase(c, style, rng) for c in rhythm]
    for c in others:
        s = _phrase(c, style, rng)
        if c == "STE_" and territory and rng.random() < 0.6:
            s = f"{s} {rng.choice(_TERRITORY_TEXT[territory])}"
        if c in _HEDGEABLE and rng.random() < hedge_p:
            s = f"{rng.choice(_HEDGES)} {s[0].lower() + s[1:]}"
        sentences.append(s)
    for negated, pool in _NEGATIONS.items():
        if not set(negated) & set(lab) and rng.random() < negation_p / 2:
            sentences.append(str(rng.choice(pool)))
    if rng.random() < filler_p:
        sentences.insert(int(rng.integers(1, len(sentences) + 1)), str(rng.choice(_NO_LABEL)))
    if "NORM" in lab and rng.random() < 0.8:
        sentences.append(str(rng.choice(_SUMMARY["normal"])))
    elif (others or "AFIB" in rhythm) and rng.random() < 0.6:
        sentences.append(str(rng.choice(_SUMMARY["abnormal" if rng.random() < 0.8 else "borderline"])))
    if measurements is None and heart_rate is not None and style != "short" and rng.random() < 0.4:
        sentences.insert(1, f"ventricular rate {int(round(heart_rate))} bpm")
    if measurements is not None and style != "short" and rng.random() < 0.7:
        line = measurements.line(style)
        if style == "machine":
            sentences = [line] + sentences
        else:
            sentences.insert(1, line)
    if style == "short":
        sentences = [s.lower() for s in sentences]
        return ". ".join(sentences) + "."
    sentences = [s[0].upper() + s[1:] for s in sentences]
    return ". ".join(sentences) + "."


def measure(signal: np.ndarray, fs: float, rpeaks: np.ndarray, params: dict) -> Measurements:
    """Measure rate, intervals and axes of a generated record.

    The rate and the frontal QRS/T/P axes are measured on the signal (R peaks; net areas of the median beat in
    leads I and aVF); PR, QRS and QT durations are the generator's own intervals (exactly what the beat model draws).

    Args:
        signal: ``(12, T)`` mV in :data:`STANDARD_LEADS` order.
        fs: Hz.
        rpeaks: R-peak sample indices.
        params: the generator's ``params`` (``pr``, ``qrs_ms``, ``qt``, ``afib``).
    """
    rr = np.diff(rpeaks) / fs
    rate = int(round(60 / float(np.median(rr)))) if len(rr) else int(round(params.get("hr", 60)))
    i_lead, avf = signal[STANDARD_LEADS.index("I")], signal[STANDARD_LEADS.index("aVF")]

    def axis(lo: float, hi: float) -> int:
        acc_i, acc_f = 0.0, 0.0
        for r in rpeaks:
            s, e = int(r + lo * fs), int(r + hi * fs)
            if s < 0 or e > signal.shape[1]:
                continue
            ref = slice(max(0, int(r - fs)), int(r + fs))  # isoelectric reference: median over +-1 s
            acc_i += float(i_lead[s:e].sum() - (e - s) * np.median(i_lead[ref]))
            acc_f += float(avf[s:e].sum() - (e - s) * np.median(avf[ref]))
        return int(round(np.degrees(np.arctan2(acc_f, acc_i))))

    qrs_half = params["qrs_ms"] / 2000
    qrs_axis = axis(-qrs_half, qrs_half)
    t_axis = axis(params["t_peak"] - 0.08, params["t_peak"] + 0.08)
    p_axis = None if params.get("afib") else axis(-params["pr"] - 0.04, -params["pr"] + 0.04)
    qt = int(round(params["qt"] * 1000))
    rr_s = 60 / rate
    return Measurements(rate, None if params.get("afib") else int(round(params["pr"] * 1000)), int(params["qrs_ms"]),
                        qt, int(round(qt / np.sqrt(rr_s))), p_axis, qrs_axis, t_axis)  # fmt: skip


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
    rr_mean = 60 / hr
    qt_t = 0.26 * np.sqrt(rr_mean) + 0.04  # T-wave peak after R (as drawn above)
    qrs_ms = float(np.round(rng.uniform(126, 160) if qrs_w > 1 else rng.uniform(78, 102)))
    params = {"hr": float(hr), "pr": float(pr), "territory": territory, "pvc_beats": kinds.tolist(),
              "qrs_ms": qrs_ms, "t_peak": float(qt_t), "qt": float(qt_t + 0.08), "afib": "AFIB" in lab}  # fmt: skip
    sig32 = sig12.astype(np.float32)
    meas = measure(sig32, fs, rpk, params)
    params["measurements"] = meas
    report = make_report(labels, rng, measurements=meas, territory=territory)
    return SyntheticECG(sig32, float(fs), rpk, list(labels), report, params)


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
        # MIMIC keeps the machine statements in report_N and the measurements in their own columns.
        m = ecg.params["measurements"]
        report = make_report(ecg.labels, rng, style="machine", territory=ecg.params["territory"])
        sentences = report.rstrip(".").split(". ")
        mm = {"subject_id": subject, "study_id": study, "cart_id": 6848, "ecg_time": rec_rows[-1]["ecg_time"]}
        slots = sorted(rng.choice(18, size=min(18, len(sentences)), replace=False))  # non-contiguous columns
        for j in range(18):
            mm[f"report_{j}"] = None
        for s, j in zip(sentences, slots):
            mm[f"report_{j}"] = s
        missing = 29999
        p_on = missing if m.pr is None else 200 - m.pr
        mm.update({"bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter",
                   "rr_interval": int(round(60000 / m.rate)), "p_onset": p_on,
                   "p_end": missing if m.pr is None else p_on + 100, "qrs_onset": 200, "qrs_end": 200 + m.qrs,
                   "t_end": 200 + m.qt, "p_axis": missing if m.p_axis is None else m.p_axis,
                   "qrs_axis": m.qrs_axis, "t_axis": m.t_axis})  # fmt: skip
        mm_rows.append(mm)
    pd.DataFrame(rec_rows).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(mm_rows).to_csv(root / "machine_measurements.csv", index=False)
    return root
