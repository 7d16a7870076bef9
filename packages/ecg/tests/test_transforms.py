from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from vlp_ecg.transforms import (
    AmplitudeScale,
    BandPass,
    BaselineWander,
    Compose,
    CropPad,
    GaussianNoise,
    Normalize,
    Notch,
    RandomLeadMask,
    Resample,
    build_transforms,
    sample_rng,
)


def _sine(freq: float, fs: float = 500.0, dur: float = 10.0, leads: int = 12) -> dict:
    t = np.arange(int(fs * dur)) / fs
    x = np.stack([np.sin(2 * np.pi * freq * t) * (i + 1) for i in range(leads)]).astype(np.float32)
    return {"ecg": x, "fs": fs}


def _power(x: np.ndarray) -> float:
    return float((x[:, 200:-200] ** 2).mean())


def test_resample_matches_scipy_polyphase() -> None:
    s = _sine(3.0)
    out = Resample(100)(s)
    assert out["fs"] == 100 and out["ecg"].shape == (12, 1000)
    np.testing.assert_allclose(out["ecg"], resample_poly(s["ecg"], 1, 5, axis=-1), rtol=1e-5, atol=1e-6)
    up = Resample(500)({"ecg": s["ecg"][:, :4000], "fs": 400.0})
    assert up["ecg"].shape == (12, 5000)  # 400 -> 500 Hz is up 5 / down 4
    assert s["ecg"].shape == (12, 5000)  # input untouched


def test_bandpass_and_notch_attenuate() -> None:
    low, mid, mains = _sine(0.1), _sine(10.0), _sine(50.0)
    bp = BandPass(0.5, 40.0)
    assert _power(bp(low)["ecg"]) < 0.01 * _power(low["ecg"])
    assert _power(bp(mid)["ecg"]) > 0.9 * _power(mid["ecg"])
    assert _power(bp(_sine(100.0))["ecg"]) < 0.05 * _power(_sine(100.0)["ecg"])
    notch = Notch(50.0)
    assert _power(notch(mains)["ecg"]) < 0.01 * _power(mains["ecg"])
    assert _power(notch(mid)["ecg"]) > 0.95 * _power(mid["ecg"])


@pytest.mark.parametrize("mode", ["zscore", "robust", "minmax", "zscore_global", "minmax_global"])
def test_normalize(mode: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(2.0, 3.0, (12, 1000)) * np.arange(1, 13)[:, None]).astype(np.float32)
    y = Normalize(mode)({"ecg": x, "fs": 100})["ecg"]
    if mode == "zscore":
        np.testing.assert_allclose(y.mean(1), 0, atol=1e-4)
        np.testing.assert_allclose(y.std(1), 1, atol=1e-3)
    elif mode == "minmax":
        np.testing.assert_allclose(y.min(1), 0, atol=1e-6)
        np.testing.assert_allclose(y.max(1), 1, atol=1e-5)
    elif mode == "minmax_global":
        assert abs(y.min()) < 1e-6 and abs(y.max() - 1) < 1e-5 and y[0].max() < 0.6  # shared scale
    elif mode == "zscore_global":
        assert abs(y.mean()) < 1e-4 and abs(y.std() - 1) < 1e-3
    else:
        np.testing.assert_allclose(np.median(y, 1), 0, atol=1e-4)


def test_normalize_ignores_padding_and_masked_leads() -> None:
    s = CropPad(12.0)(_sine(2.0, fs=100))
    assert s["ecg"].shape == (12, 1200) and s["ecg_mask"].sum() == 1000 and not s["ecg_mask"][1000:].any()
    s["lead_mask"] = np.array([True] * 11 + [False])
    y = Normalize()(s)["ecg"]
    np.testing.assert_allclose(y[:11, :1000].std(1), 1, atol=1e-3)
    assert (y[:, 1000:] == 0).all() and (y[11] == 0).all()


def test_crop_pad_modes_and_rpeaks() -> None:
    s = _sine(1.0, fs=100)
    s["rpeaks"] = np.array([50, 150, 450, 950])
    c = CropPad(5.0, mode="center")(s)
    assert c["ecg"].shape == (12, 500) and c["ecg_mask"].all()
    np.testing.assert_array_equal(c["rpeaks"], [200])  # 450 - 250
    r1 = CropPad(5.0, mode="random")(s, np.random.default_rng(1))
    r2 = CropPad(5.0, mode="random")(s, np.random.default_rng(1))
    np.testing.assert_array_equal(r1["ecg"], r2["ecg"])


def test_augmentations_deterministic_with_seed() -> None:
    pipe = build_transforms([{"name": "amplitude_scale"}, {"name": "baseline_wander"}, {"name": "noise", "std": 0.1},
                             {"name": "lead_mask", "p": 0.5}])  # fmt: skip
    s = _sine(1.0, fs=100)
    a, b = pipe(s, sample_rng(7, 0, 3)), pipe(s, sample_rng(7, 0, 3))
    c = pipe(s, sample_rng(7, 1, 3))
    np.testing.assert_array_equal(a["ecg"], b["ecg"])
    np.testing.assert_array_equal(a["lead_mask"], b["lead_mask"])
    assert not np.array_equal(a["ecg"], c["ecg"])
    assert 0 < a["lead_mask"].sum() < 12 and (a["ecg"][~a["lead_mask"]] == 0).all()
    np.testing.assert_array_equal(s["ecg"], _sine(1.0, fs=100)["ecg"])  # input not mutated


def test_each_augmentation_changes_signal_as_specified() -> None:
    s = _sine(1.0, fs=100)
    rng = np.random.default_rng(0)
    noisy = GaussianNoise(0.1)(s, rng)["ecg"] - s["ecg"]
    assert 0.08 < noisy.std() < 0.12
    scaled = AmplitudeScale((2.0, 2.0))(s, rng)["ecg"]
    np.testing.assert_allclose(scaled, 2 * s["ecg"], rtol=1e-6)
    wander = BaselineWander(0.5, (0.1, 0.1))(s, rng)["ecg"] - s["ecg"]
    assert 0 < np.abs(wander).max() <= 0.5 + 1e-6
    masked = RandomLeadMask(1.0)(s, rng)
    assert masked["lead_mask"].sum() == 1  # never drops every lead
    assert isinstance(Compose([Resample(100)]), Compose)
