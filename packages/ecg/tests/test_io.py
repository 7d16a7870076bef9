from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from vlp_core.data import BadInputError
from vlp_ecg.io import STANDARD_LEADS, ECGBadInputError, canonical_lead_name, read_record, write_record
from vlp_ecg.synth import make_fake_mimic, synthesize_ecg

from .conftest import sample_record


def _wrsamp(path: Path, signal: np.ndarray, fs: float, names: list[str], fmt: str = "16", gain: float = 1000.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(path.name, fs=fs, units=["mV"] * len(names), sig_name=names, p_signal=signal.T.astype(np.float64),
                fmt=[fmt] * len(names), adc_gain=[gain] * len(names), baseline=[0] * len(names),
                comments=["age: 60", "sinus rhythm"], write_dir=str(path.parent))  # fmt: skip
    return str(path)


def test_wrsamp_round_trip_ptbxl_layout(tmp_path: Path) -> None:
    ecg = synthesize_ecg(["SR"], fs=100, duration=2.5, seed=1)
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]  # PTB-XL upper case
    rec = _wrsamp(tmp_path / "records100" / "00000" / "00001_lr", ecg.signal, 100, names)
    out = read_record(rec)
    assert out.leads == list(STANDARD_LEADS)
    assert out.signal.dtype == np.float32 and out.signal.shape == (12, 250)
    assert out.fs == 100.0 and out.comments == ["age: 60", "sinus rhythm"]
    np.testing.assert_allclose(out.signal, ecg.signal, atol=5.1e-4)  # 1 uV/LSB quantisation
    # Our fast writer produces the same bytes as wfdb.wrsamp and reads back identically through wfdb.
    write_record(tmp_path / "fast" / "00001_lr", ecg.signal, 100, names, comments=["age: 60", "sinus rhythm"])
    assert (tmp_path / "fast" / "00001_lr.dat").read_bytes() == Path(rec + ".dat").read_bytes()
    a, b = wfdb.rdrecord(str(tmp_path / "fast" / "00001_lr")), wfdb.rdrecord(rec)
    assert a.checksum == b.checksum and a.init_value == b.init_value and a.sig_name == b.sig_name
    np.testing.assert_array_equal(a.p_signal, b.p_signal)


def test_mimic_lead_order_reordered_by_name(tmp_path: Path) -> None:
    root = make_fake_mimic(tmp_path / "mimic", n=2, seed=3)
    rel = sorted(root.glob("files/*/*/*/*.hea"))[0]
    raw = wfdb.rdrecord(str(rel)[:-4])
    assert raw.sig_name[4:6] == ["aVF", "aVL"]  # the file really has MIMIC's order
    out = read_record(str(rel))
    assert out.leads[4:6] == ["aVL", "aVF"]
    for i, name in enumerate(STANDARD_LEADS):
        np.testing.assert_allclose(out.signal[i], raw.p_signal[:, raw.sig_name.index(name)], atol=1e-6)
    # Einthoven survives the reorder: aVF = II - I/2 and aVL = I - II/2 (holds only if the swap is right).
    i_, ii = out.signal[0], out.signal[1]
    np.testing.assert_allclose(out.signal[5], ii - i_ / 2, atol=2e-3)
    np.testing.assert_allclose(out.signal[4], i_ - ii / 2, atol=2e-3)


def test_case_insensitive_lead_names() -> None:
    assert canonical_lead_name("avr") == canonical_lead_name("AVR") == canonical_lead_name("aVR") == "aVR"
    assert canonical_lead_name("v1") == "V1" and canonical_lead_name("MLII") == "MLII"
    assert canonical_lead_name("lead_7") is None


def test_real_ptbdb_record_matches_wfdb_by_name() -> None:
    path = sample_record("ptbdb", "s0010_re")
    out = read_record(path)
    assert out.fs == 1000.0 and out.signal.shape == (12, 38400)
    sig, fields = wfdb.rdsamp(path)
    for i, name in enumerate(STANDARD_LEADS):
        np.testing.assert_allclose(out.signal[i], sig[:, fields["sig_name"].index(name.lower())], rtol=1e-6)
    assert any("infero-latera" in c for c in out.comments)
    full = read_record(path, leads=None)
    assert full.leads[-3:] == ["VX", "VY", "VZ"] and full.signal.shape[0] == 15


def test_real_mitdb_format_212() -> None:
    path = sample_record("mitdb", "100")
    out = read_record(path, leads=None)
    assert out.leads == ["MLII", "V5"] and out.fs == 360.0 and out.signal.shape == (2, 650000)
    assert out.meta["fmt"] == ["212", "212"]
    sig, _ = wfdb.rdsamp(path, sampto=1000)
    np.testing.assert_allclose(out.signal[:, :1000], sig.T, rtol=1e-6)
    ann = wfdb.rdann(path, "atr")
    assert len(ann.sample) == 2274
    with pytest.raises(ECGBadInputError, match=r"100: missing lead\(s\)"):
        read_record(path)  # no 12-lead set in a 2-lead Holter record
    zero = read_record(path, missing="zero")
    assert zero.lead_mask.tolist() == [False] * 10 + [True, False]  # only V5 present, by name
    np.testing.assert_array_equal(zero.signal[STANDARD_LEADS.index("V5")], out.signal[1])


def test_multi_segment_record(tmp_path: Path) -> None:
    a, b = synthesize_ecg(["SR"], fs=100, duration=3, seed=1), synthesize_ecg(["SR"], fs=100, duration=2, seed=2)
    write_record(tmp_path / "ms_1", a.signal, 100, STANDARD_LEADS)
    write_record(tmp_path / "ms_2", b.signal, 100, STANDARD_LEADS)
    (tmp_path / "ms.hea").write_text("ms/2 12 100 500\nms_1 300\nms_2 200\n")
    out = read_record(tmp_path / "ms")
    assert out.signal.shape == (12, 500) and out.meta["n_segments"] == 2
    np.testing.assert_allclose(out.signal, np.concatenate([a.signal, b.signal], 1), atol=5.1e-4)


def test_multi_frequency_record(tmp_path: Path) -> None:
    t = np.arange(1000) / 100.0
    slow = np.sin(2 * np.pi * 1.0 * t)
    fast = np.sin(2 * np.pi * 1.0 * np.arange(2000) / 200.0)
    wfdb.wrsamp("mf", fs=100, units=["mV", "mV"], sig_name=["i", "II"], e_p_signal=[slow, fast], samps_per_frame=[1, 2],
                fmt=["16", "16"], adc_gain=[1000, 1000], baseline=[0, 0], write_dir=str(tmp_path))  # fmt: skip
    out = read_record(tmp_path / "mf", leads=["I", "II"])
    assert out.fs == 200.0 and out.signal.shape == (2, 2000)
    np.testing.assert_allclose(out.signal[1], fast, atol=1e-3)
    np.testing.assert_allclose(out.signal[0][100:-100], fast[100:-100], atol=0.02)  # upsampled 1 Hz sine
    framed = read_record(tmp_path / "mf", leads=["I", "II"], multifreq="frame")
    assert framed.fs == 100.0 and framed.signal.shape == (2, 1000)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture()
def good_record(tmp_path: Path) -> Path:
    ecg = synthesize_ecg(["SR"], fs=100, duration=2.5, seed=0)
    return write_record(tmp_path / "rec", ecg.signal, 100, STANDARD_LEADS)


def test_truncated_dat(good_record: Path) -> None:
    dat = Path(f"{good_record}.dat")
    dat.write_bytes(dat.read_bytes()[:3000])
    with pytest.raises(ECGBadInputError, match=r"rec: truncated signal file rec.dat.*250 samples") as err:
        read_record(good_record)
    assert isinstance(err.value, BadInputError)


def test_header_data_length_mismatch(good_record: Path) -> None:
    dat = Path(f"{good_record}.dat")
    dat.write_bytes(dat.read_bytes() + bytes(24 * 50))
    with pytest.raises(ECGBadInputError, match=r"rec: header/data length mismatch.*sig_len=250.*~300 samples"):
        read_record(good_record)


def test_nan_samples(good_record: Path) -> None:
    raw = bytearray(Path(f"{good_record}.dat").read_bytes())
    raw[2 * 12 * 10 + 2 : 2 * 12 * 10 + 4] = (-32768).to_bytes(2, "little", signed=True)  # sample 10 of lead II
    Path(f"{good_record}.dat").write_bytes(bytes(raw))
    with pytest.raises(ECGBadInputError, match=r"rec: lead II has 1 invalid \(NaN\) samples of 250"):
        read_record(good_record)
    fixed = read_record(good_record, nan="interpolate")
    assert fixed.meta["nan"] == {"interpolated": {"II": 1}, "masked": []} and np.isfinite(fixed.signal).all()


def test_flat_lead(tmp_path: Path) -> None:
    ecg = synthesize_ecg(["SR"], fs=100, duration=2.5, seed=0)
    sig = ecg.signal.copy()
    sig[7] = 0.25
    path = write_record(tmp_path / "flat", sig, 100, STANDARD_LEADS)
    with pytest.raises(ECGBadInputError, match=r"flat: lead V2 is flat"):
        read_record(path)
    out = read_record(path, flat="mask")
    assert out.lead_mask.sum() == 11 and not out.lead_mask[7]


def test_unknown_lead_name(tmp_path: Path) -> None:
    ecg = synthesize_ecg(["SR"], fs=100, duration=2.5, seed=0)
    names = list(STANDARD_LEADS)
    names[6] = "lead_7"
    path = write_record(tmp_path / "odd", ecg.signal, 100, names)
    with pytest.raises(ECGBadInputError, match=r"odd: missing lead\(s\) \['V1'\].*unrecognised lead names.*lead_7"):
        read_record(path)
    with pytest.raises(ValueError, match=r"unknown lead name\(s\) \['V7b'\]"):
        read_record(path, leads=["I", "V7b"])


def test_wrong_sampling_rate(good_record: Path) -> None:
    with pytest.raises(ECGBadInputError, match=r"rec: sampling rate is 100 Hz but the configuration expects 500 Hz"):
        read_record(good_record, expected_fs=500)


def test_missing_header(tmp_path: Path) -> None:
    with pytest.raises(ECGBadInputError, match="nothing.hea does not exist"):
        read_record(tmp_path / "nothing")


def test_copy_of_real_record_truncated(tmp_path: Path) -> None:
    src = sample_record("mitdb", "100")
    for suffix in (".hea", ".dat"):
        shutil.copy(src + suffix, tmp_path / f"100{suffix}")
    dat = tmp_path / "100.dat"
    dat.write_bytes(dat.read_bytes()[:100_000])
    with pytest.raises(ECGBadInputError, match=r"100: truncated signal file 100.dat.*650000 samples"):
        read_record(tmp_path / "100", leads=None)


# ------------------------------------------------------------------------------------------------ records in the wild
def _wr(path: Path, sigs: list[np.ndarray], fs: float, names: list[str], units: list[str], spf: list[int]) -> None:
    """wfdb.wrsamp of channels at their own rates (``sigs[i]`` has ``n * spf[i]`` samples); NaN = invalid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gains = [1000.0 if u == "mV" else 10.0 for u in units]
    wfdb.wrsamp(path.name, fs=fs, units=units, sig_name=names, e_p_signal=[np.asarray(x, np.float64) for x in sigs],
                samps_per_frame=spf, fmt=["16"] * len(names), adc_gain=gains, baseline=[0] * len(names),
                write_dir=str(path.parent))  # fmt: skip


def test_rate_from_requested_leads_and_non_ecg_channels(tmp_path: Path) -> None:
    n = 500  # frames at 100 Hz
    t = np.arange(n) / 100
    ii = 0.8 * np.sin(2 * np.pi * 1.2 * t)
    abp = 90 + 30 * np.sin(2 * np.pi * 1.2 * np.arange(4 * n) / 400)  # mmHg, 4 samples per frame
    resp = 0.3 * np.sin(2 * np.pi * 0.25 * t)
    _wr(tmp_path / "icu", [ii, -ii / 2, abp, resp], 100, ["II", "aVR", "ABP", "RESP"], ["mV", "mV", "mmHg", "NU"],
        [1, 1, 4, 1])  # fmt: skip
    out = read_record(tmp_path / "icu", leads=["II", "aVR"], expected_fs=100)  # ABP at 400 Hz does not set the rate
    assert out.fs == 100.0 and out.signal.shape == (2, n)
    np.testing.assert_allclose(out.signal[0], ii, atol=1e-3)
    every = read_record(tmp_path / "icu", leads=None)
    assert every.leads == ["II", "aVR"] and every.fs == 100.0
    assert every.meta["other_channels"] == [{"name": "ABP", "units": "mmHg"}, {"name": "RESP", "units": "NU"}]
    kept = read_record(tmp_path / "icu", leads=None, other_channels="keep")
    assert kept.leads == ["II", "aVR", "ABP", "RESP"] and kept.fs == 400.0
    assert kept.meta["out_units"] == ["mV", "mV", "mmHg", "NU"]
    np.testing.assert_allclose(kept.signal[2], abp, atol=0.06)  # mmHg, not converted


def test_nan_policy_limits(tmp_path: Path) -> None:
    ecg = synthesize_ecg(["SR"], fs=500, duration=10, seed=3).signal.astype(np.float64)
    sig = [x.copy() for x in ecg]
    sig[1][1000:1003] = np.nan  # 3 invalid samples in lead II: 6 ms
    sig[7][2000:2100] = np.nan  # 200 ms gap in V2
    _wr(tmp_path / "gaps", sig, 500, list(STANDARD_LEADS), ["mV"] * 12, [1] * 12)
    with pytest.raises(ECGBadInputError, match=r"gaps: lead II has 3 invalid"):
        read_record(tmp_path / "gaps")
    with pytest.raises(ECGBadInputError, match=r"lead V2 has 100 invalid .*beyond the repairable limits"):
        read_record(tmp_path / "gaps", nan="interpolate")
    masked = read_record(tmp_path / "gaps", nan="mask")
    assert masked.meta["nan"] == {"interpolated": {"II": 3}, "masked": ["V2"]}
    assert masked.lead_mask.tolist() == [i != 7 for i in range(12)] and not masked.signal[7].any()
    np.testing.assert_allclose(masked.signal[1][999:1004], np.linspace(ecg[1][999], ecg[1][1003], 5), atol=2e-3)
    loose = read_record(tmp_path / "gaps", nan="interpolate", max_nan_gap=0.25, max_nan_fraction=0.05)
    assert loose.meta["nan"]["interpolated"] == {"II": 3, "V2": 100} and loose.lead_mask.all()


def test_multi_segment_layout_multifrequency_and_null_segment(tmp_path: Path) -> None:
    fs, n1, n2 = 125, 250, 125
    t1, t2 = np.arange(2 * n1) / 250, (np.arange(2 * n2) + 2 * (n1 + 25)) / 250
    wave = lambda t: np.sin(2 * np.pi * 1.5 * t)  # noqa: E731
    _wr(tmp_path / "bed_1", [wave(t1), 80 + 0 * t1[::2]], fs, ["II", "ABP"], ["mV", "mmHg"], [2, 1])
    _wr(tmp_path / "bed_2", [wave(t2), 80 + 0 * t2[::2]], fs, ["II", "ABP"], ["mV", "mmHg"], [2, 1])
    (tmp_path / "bed_layout.hea").write_text("bed_layout 2 125 0\n~ 0 1000(0)/mV 16 0 0 0 0 II\n"
                                             "~ 0 10(0)/mmHg 16 0 0 0 0 ABP\n")  # fmt: skip
    (tmp_path / "bed.hea").write_text(f"bed/4 2 125 {n1 + 25 + n2}\nbed_layout 0\nbed_1 {n1}\n~ 25\nbed_2 {n2}\n")
    with pytest.raises(ECGBadInputError, match=r"lead II has 50 invalid"):  # the null segment: 25 frames x 2
        read_record(tmp_path / "bed", leads=["II"])
    out = read_record(tmp_path / "bed", leads=["II"], nan="interpolate", max_nan_gap=0.25, max_nan_fraction=0.2)
    assert out.fs == 250.0 and out.signal.shape == (1, 2 * (n1 + 25 + n2))  # upsampled, not frame-averaged
    np.testing.assert_allclose(out.signal[0][: 2 * n1], wave(t1), atol=2e-3)
    np.testing.assert_allclose(out.signal[0][2 * (n1 + 25) :], wave(t2), atol=2e-3)
    assert out.meta["n_segments"] == 3 and out.meta["other_channels"] == [{"name": "ABP", "units": "mmHg"}]
    with pytest.raises(ECGBadInputError, match=r"every returned lead is masked"):
        read_record(tmp_path / "bed", leads=["II"], nan="mask")  # the 200 ms gap is beyond the default 50 ms
    framed = read_record(tmp_path / "bed", leads=["II"], multifreq="frame", nan="interpolate", max_nan_gap=0.25,
                         max_nan_fraction=0.2)  # fmt: skip
    assert framed.fs == 125.0 and framed.signal.shape == (1, n1 + 25 + n2)
