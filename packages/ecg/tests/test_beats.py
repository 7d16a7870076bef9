from __future__ import annotations

import numpy as np
import wfdb

from vlp_ecg.beats import BEAT_SYMBOLS, beat_windows, detect_rpeaks, match_peaks
from vlp_ecg.io import read_record
from vlp_ecg.synth import synthesize_ecg

from .conftest import sample_record


def test_rpeaks_mitdb_100_sensitivity_and_ppv() -> None:
    path = sample_record("mitdb", "100")
    rec = read_record(path, leads=None)
    ann = wfdb.rdann(path, "atr")
    ref = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS])
    assert len(ref) == 2273  # 2,274 annotations, one is a rhythm marker ('+')
    tol = int(round(0.150 * rec.fs))
    for leads in (rec.signal, rec.signal[0]):  # both leads, and MLII alone
        m = match_peaks(detect_rpeaks(leads, rec.fs), ref, tol)
        assert m["sensitivity"] >= 0.99 and m["ppv"] >= 0.99, m


def test_rpeaks_on_synthetic_ground_truth() -> None:
    for labels in (["SR"], ["SBRAD"], ["STACH"], ["AFIB"], ["SR", "PVC"], ["SR", "CLBBB"], ["SR", "CRBBB"]):
        for fs in (100.0, 500.0):
            ecg = synthesize_ecg(labels, fs=fs, seed=4)
            m = match_peaks(detect_rpeaks(ecg.signal, fs), ecg.rpeaks, int(0.1 * fs))
            assert m["sensitivity"] >= 0.9 and m["ppv"] >= 0.9, (labels, fs, m)


def test_match_peaks_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    ref = np.sort(rng.choice(10_000, 60, replace=False))
    det = np.sort(np.concatenate([ref[:50] + rng.integers(-5, 6, 50), rng.choice(10_000, 5, replace=False)]))
    m = match_peaks(det, ref, 10)
    # Brute force: a reference is found if some unused detection lies within tolerance (greedy in time order).
    used, tp = set(), 0
    for r in ref:
        cands = [(abs(d - r), j) for j, d in enumerate(det) if abs(d - r) <= 10 and j not in used]
        if cands:
            used.add(min(cands)[1])
            tp += 1
    assert m["tp"] == tp and m["fn"] == len(ref) - tp and m["fp"] == len(det) - tp
    assert match_peaks([], ref, 10)["sensitivity"] == 0.0


def test_beat_windows_clip_to_record() -> None:
    w = beat_windows(np.array([10, 500, 995]), 1000, 100.0, before=0.25, after=0.45)
    np.testing.assert_array_equal(w, [[0, 55], [475, 545], [970, 1000]])
