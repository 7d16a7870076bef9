"""CT readers on the real TotalSegmentator series/volume, pydicom's CT_small.dcm and altered copies."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from vlp_core.data.errors import BadInputError, CorruptRecordError
from vlp_core.testing import require_sample_data
from vlp_ct3d.io import HURangeWarning, ModalityWarning, SeriesError, read_dicom_series, read_nifti, save_nifti


@pytest.fixture(scope="module")
def series_dir() -> Path:
    return require_sample_data("ct", "totalseg", "example_ct_dicom")


@pytest.fixture(scope="module")
def series(series_dir: Path):
    return read_dicom_series(series_dir)


def _copy(series_dir: Path, tmp_path: Path) -> list[Path]:
    out = tmp_path / "series"
    shutil.copytree(series_dir, out)
    return sorted(out.iterdir())


def test_real_series_geometry_from_positions(series, series_dir: Path) -> None:
    headers = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted(series_dir.iterdir())]
    assert float(headers[0].SliceThickness) == 3.0  # the header says 3 mm ...
    assert series.array.shape == (512, 512, 20)
    np.testing.assert_allclose(series.spacing, (0.9765625, 0.9765625, 2.0))  # ... positions are 2 mm apart
    zs = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    # k = 0 is the most inferior slice and the affine maps voxel (0,0,k) to that slice's position (LPS -> RAS).
    lowest = min(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    ipp = np.array([float(v) for v in lowest.ImagePositionPatient])
    np.testing.assert_allclose(series.affine @ [0, 0, 0, 1], [-ipp[0], -ipp[1], ipp[2], 1])
    np.testing.assert_allclose((series.affine @ [0, 0, 19, 1])[2], zs[-1])
    assert series.axcodes == ("L", "P", "S")
    # Modality LUT applied once: stored uint16 with intercept -1024.
    raw = lowest.RescaleIntercept, lowest.RescaleSlope
    px = pydicom.dcmread(str(next(p for p in series_dir.iterdir() if pydicom.dcmread(str(p), stop_before_pixels=True)
                                  .ImagePositionPatient == lowest.ImagePositionPatient))).pixel_array  # fmt: skip
    np.testing.assert_allclose(series.array[:, :, 0], px.T.astype(np.float32) * float(raw[1]) + float(raw[0]))
    assert series.array.min() == -1024.0


def test_order_does_not_depend_on_file_names_or_instance_numbers(series, series_dir: Path, tmp_path: Path) -> None:
    files = _copy(series_dir, tmp_path)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(files))
    renamed = []
    for i, f in enumerate(files):  # scramble names and InstanceNumbers
        ds = pydicom.dcmread(str(f))
        ds.InstanceNumber = int(perm[i]) + 1
        target = f.parent / f"x{perm[i]:03d}.dcm"
        ds.save_as(str(target))
        f.unlink()
        renamed.append(target)
    again = read_dicom_series(renamed[0].parent)
    np.testing.assert_array_equal(again.array, series.array)
    np.testing.assert_allclose(again.affine, series.affine)


def test_missing_slice_is_a_gap_error(series_dir: Path, tmp_path: Path) -> None:
    files = _copy(series_dir, tmp_path)
    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(str(f), stop_before_pixels=True).ImagePositionPatient[2]))
    by_z[7].unlink()
    with pytest.raises(SeriesError, match=r"missing slice"):
        read_dicom_series(files[0].parent)


@pytest.mark.parametrize("problem", ["duplicate", "series", "orientation", "no_position"])
def test_inconsistent_series_errors(series_dir: Path, tmp_path: Path, problem: str) -> None:
    files = _copy(series_dir, tmp_path)
    ds = pydicom.dcmread(str(files[3]))
    if problem == "duplicate":
        ds.save_as(str(files[3].parent / "copy.dcm"))
        match = "duplicate slice position"
    elif problem == "series":
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.save_as(str(files[3]))
        match = "mixed series"
    elif problem == "orientation":
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(str(files[3]))
        match = "mixed ImageOrientationPatient"
    else:
        del ds.ImagePositionPatient
        ds.save_as(str(files[3]))
        match = "ImagePositionPatient is missing"
    with pytest.raises(SeriesError, match=match):
        read_dicom_series(files[0].parent)


def test_series_uid_selects_one_series(series, series_dir: Path, tmp_path: Path) -> None:
    files = _copy(series_dir, tmp_path)
    for f in files:
        ds = pydicom.dcmread(str(f))
        ds.SeriesInstanceUID = "1.2.3"
        ds.save_as(str(f))
    other = pydicom.dcmread(str(files[0]))
    other.SeriesInstanceUID = "9.9.9"
    other.save_as(str(files[0].parent / "other.dcm"))
    vol = read_dicom_series(files[0].parent, series_uid="1.2.3")
    np.testing.assert_array_equal(vol.array, series.array)


def test_rescale_applied_once_per_slice(series, series_dir: Path, tmp_path: Path) -> None:
    files = _copy(series_dir, tmp_path)
    for f in files:  # same HU, different encoding: stored = (raw // 2) with slope 2, intercept -1024
        ds = pydicom.dcmread(str(f))
        px = ds.pixel_array.astype(np.int32)
        ds.set_pixel_data((px // 2).astype(np.uint16), "MONOCHROME2", 16)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.save_as(str(f))
    vol = read_dicom_series(files[0].parent)
    assert np.abs(vol.array - series.array).max() <= 1.0  # only the halving's rounding


def test_non_ct_modality_warns_or_raises(series_dir: Path, tmp_path: Path) -> None:
    files = _copy(series_dir, tmp_path)
    for f in files:
        ds = pydicom.dcmread(str(f))
        ds.Modality = "MR"
        ds.save_as(str(f))
    with pytest.warns(ModalityWarning, match="'MR', not 'CT'"):
        read_dicom_series(files[0].parent)
    with pytest.raises(BadInputError, match="'MR', not 'CT'"):
        read_dicom_series(files[0].parent, strict_modality=True)


def test_pydicom_ct_small() -> None:
    from pydicom.data import get_testdata_file

    vol = read_dicom_series(get_testdata_file("CT_small.dcm"))
    assert vol.array.shape == (128, 128, 1)
    assert (vol.array.min(), vol.array.max()) == (-896.0, 1167.0)
    np.testing.assert_allclose(vol.spacing[:2], (0.661468, 0.661468))


def test_real_nifti_is_ras_hu() -> None:
    vol = read_nifti(require_sample_data("ct", "totalseg", "example_ct.nii.gz"))
    assert vol.axcodes == ("R", "A", "S") and vol.spacing == (3.0, 3.0, 3.0)
    assert vol.array.shape == (122, 101, 112) and vol.array.min() < -1000 < 1000 < vol.array.max()


def _write(tmp_path: Path, data: np.ndarray, affine: np.ndarray, name: str = "v.nii.gz") -> Path:
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(p))
    return p


def test_shear_affine_nan_and_modes(tmp_path: Path) -> None:
    data = np.full((8, 8, 8), -1000, np.int16)
    shear = np.eye(4)
    shear[0, 1] = 0.3
    with pytest.raises(BadInputError, match="sheared"):
        read_nifti(_write(tmp_path, data, shear))
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(CorruptRecordError, match="1 NaN"):
        read_nifti(_write(tmp_path, nan, np.eye(4), "nan.nii.gz"))
    with pytest.raises(ValueError, match="needs slope and intercept"):
        read_nifti(_write(tmp_path, data, np.eye(4)), hu_mode="apply_rescale")
    with pytest.raises(ValueError, match="hu_mode must be"):
        read_nifti(_write(tmp_path, data, np.eye(4)), hu_mode="auto")


def test_hu_modes_and_double_rescale_warning(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1000, 512).reshape(8, 8, 8).astype(np.int16)
    raw = nib.Nifti1Image((hu + 1024).astype(np.uint16), np.eye(4))
    raw.header.set_slope_inter(3.0, 7.0)  # meaningless header scaling must be ignored under apply_rescale
    p = tmp_path / "raw.nii.gz"
    nib.save(raw, str(p))
    v = read_nifti(p, hu_mode="apply_rescale", slope=1.0, intercept=-1024.0)
    np.testing.assert_array_equal(v.array, hu.astype(np.float32))
    fixed = _write(tmp_path, hu, np.eye(4), "fixed.nii.gz")
    np.testing.assert_array_equal(read_nifti(fixed).array, hu.astype(np.float32))
    with pytest.warns(HURangeWarning, match="applied twice"):  # CT-CLIP#50: rescaling a *_fixed volume again
        read_nifti(fixed, hu_mode="apply_rescale", slope=1.0, intercept=-1024.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_nifti(fixed)


def test_save_nifti_round_trip(tmp_path: Path) -> None:
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    affine[:3, 3] = (10, 20, -30)
    data = np.random.default_rng(0).uniform(-1000, 1000, (6, 5, 4))
    p = save_nifti(data, affine, tmp_path / "out.nii.gz")
    img = nib.load(str(p))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, affine)
    assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(data).astype(np.int16))
