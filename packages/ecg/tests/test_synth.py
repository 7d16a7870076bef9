from __future__ import annotations

import re

import numpy as np
import pytest

from vlp_ecg.beats import detect_rpeaks
from vlp_ecg.io import STANDARD_LEADS
from vlp_ecg.synth import CLASSES, derive_limb_leads, make_report, synthesize_ecg


@pytest.mark.parametrize("labels", [["SR"], ["AFIB", "CLBBB"], ["STACH", "PVC", "STE_"], ["SBRAD", "1AVB", "CRBBB"]])
def test_limb_leads_are_einthoven_goldberger_exact(labels: list[str]) -> None:
    x = synthesize_ecg(labels, fs=500, seed=2).signal.astype(np.float64)
    lead = {n: x[i] for i, n in enumerate(STANDARD_LEADS)}
    ref = derive_limb_leads(lead["I"], lead["II"])
    for n in ("III", "aVR", "aVL", "aVF"):
        np.testing.assert_allclose(lead[n], ref[n], atol=1e-5)
    np.testing.assert_allclose(lead["aVR"] + lead["aVL"] + lead["aVF"], 0, atol=1e-5)


def _rr(labels: list[str], seed: int) -> np.ndarray:
    e = synthesize_ecg(labels, fs=500, seed=seed, noise=False)
    return np.diff(e.rpeaks) / 500


def test_rates_and_rhythm_regularity() -> None:
    for seed in range(5):
        assert 60 / _rr(["SBRAD"], seed).mean() < 60
        assert 60 / _rr(["STACH"], seed).mean() > 100
        assert 58 < 60 / _rr(["SR"], seed).mean() < 102
        sr_cv = _rr(["SR"], seed).std() / _rr(["SR"], seed).mean()
        af_cv = _rr(["AFIB"], seed).std() / _rr(["AFIB"], seed).mean()
        assert af_cv > 0.1 > sr_cv


def test_p_waves_and_pr_interval() -> None:
    def p_energy(labels: list[str], seed: int) -> float | None:
        e = synthesize_ecg(labels, fs=500, duration=60.0, seed=seed, noise=False)
        ii = e.signal[1]
        # Signal-averaged 100-240 ms before R, after long RR only (so the previous T wave has ended): a P wave
        # survives averaging, AFIB's f-waves (random phase) do not.
        rr = np.diff(e.rpeaks)
        idx = [r for r, d in zip(e.rpeaks[1:], rr) if d > 0.75 * 500]
        if len(idx) < 10:
            return None
        return float(np.ptp(np.mean([ii[r - 120 : r - 50] for r in idx], axis=0)))

    checked = 0
    for seed in range(8):
        af, sr = p_energy(["AFIB"], seed), p_energy(["SBRAD"], seed)
        if af is None or sr is None:
            continue
        assert af < 0.5 * sr, (seed, af, sr)
        checked += 1
    assert checked >= 2
    sr, av = synthesize_ecg(["SR"], seed=1), synthesize_ecg(["SR", "1AVB"], seed=1)
    assert sr.params["pr"] < 0.2 < av.params["pr"]


def test_qrs_width_bundle_branch_block() -> None:
    def width(labels: list[str]) -> float:
        e = synthesize_ecg(labels, fs=500, seed=3, noise=False)
        v6 = np.abs(e.signal[STANDARD_LEADS.index("V6")])
        r = e.rpeaks[3]
        seg = v6[r - 100 : r + 100]
        return float((seg > 0.25 * seg.max()).sum() / 500)

    assert width(["SR", "CLBBB"]) > 1.5 * width(["SR"])


def test_pvc_beats_present_and_detectable() -> None:
    e = synthesize_ecg(["SR", "PVC"], fs=100, seed=5)
    assert sum(e.params["pvc_beats"]) >= 1
    assert abs(len(detect_rpeaks(e.signal, 100)) - len(e.rpeaks)) <= 1


def test_reports_describe_labels_with_varied_phrasing() -> None:
    rng = np.random.default_rng(0)
    texts = {make_report(["AFIB", "CLBBB"], rng) for _ in range(30)}
    assert len(texts) > 5
    assert all(re.search(r"\b(af|a-fib|afib)\b|fibrillation", t.lower()) for t in texts)
    assert all(re.search(r"left bundle|\bc?lbbb\b", t.lower()) for t in texts)
    assert all(t.endswith(".") for t in texts)
    norm = synthesize_ecg(["SR"], seed=0)
    assert norm.labels == ["NORM", "SR"] and set(CLASSES) >= {"SR", "AFIB", "PVC", "STE_"}
