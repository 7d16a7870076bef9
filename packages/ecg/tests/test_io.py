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
    with pytest.raises(ECGBadInputError, match=r"rec: lead II has 1 NaN samples"):
        read_record(good_record)


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
