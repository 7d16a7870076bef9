"""DICOM and raster reading on real files (vendored CXR samples, pydicom's test files) and altered copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_windowing

from vlp_core.data import CorruptRecordError, UnsupportedFormatError
from vlp_core.testing import require_sample_data
from vlp_medical.io import MissingDecoderError, read_dicom, read_image, read_raster, window_to_unit, write_dicom
from vlp_medical.transforms import CxrTransform


def _copy(name: str, tmp_path: Path) -> Path:
    src = get_testdata_file(name)
    assert src is not None, name
    dst = tmp_path / name
    shutil.copy(src, dst)
    return dst


def test_rsna_dicom_is_a_plausible_frontal_radiograph() -> None:
    path = require_sample_data("cxr", "rsna_pneumonia_sample.dcm")
    img, meta = read_dicom(path)
    assert img.shape == (1024, 1024) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.max() - img.min() > 0.8
    assert meta["photometric_interpretation"] == "MONOCHROME2" and not meta["inverted"]
    assert meta["modality"] == "CR" and meta["view_position"] == "PA"
    assert "JPEG Baseline" in meta["transfer_syntax"]
    assert meta["voi"]["mode"] == "minmax"  # no window/LUT in this file: documented fallback
    # Lungs (lateral upper fields) are darker than the mediastinum/spine in the centre.
    lungs = np.concatenate([img[300:600, 200:350].ravel(), img[300:600, 680:830].ravel()]).mean()
    assert lungs < img[300:600, 460:560].mean()
    assert not any("patient" in k for k in meta)


def test_nih_pngs_load_grey_in_unit_range() -> None:
    for name in ("nih_00000001_000.png", "nih_00027426_000.png"):
        img, meta = read_image(require_sample_data("cxr", name))
        assert img.shape == (512, 512) and meta["bit_depth"] == 8
        assert 0.0 <= img.min() < 0.2 and 0.8 < img.max() <= 1.0
        raw = np.asarray(Image.open(require_sample_data("cxr", name)))
        np.testing.assert_allclose(img, raw / 255.0, atol=1e-6)


def test_monochrome1_radiograph_is_inverted_after_window() -> None:
    path = get_testdata_file("RG1_UNCI.dcm")
    img, meta = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert meta["inverted"] and meta["voi"]["mode"] == "window"
    # pydicom's own windowing (range of the stored bits), normalised, then inverted, must agree.
    ref = apply_windowing(apply_modality_lut(ds.pixel_array, ds).astype(float), ds)
    ref = 1.0 - ref / (2 ** int(ds.BitsStored) - 1)
    np.testing.assert_allclose(img, ref, atol=1e-5)
    # Without inversion the same pixels would be the complement.
    assert img.shape == (1955, 1841)


def test_window_formula_matches_pydicom_for_all_functions(tmp_path: Path) -> None:
    path = _copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(float)
    for func in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, func
        ref = apply_windowing(hu.copy(), ds)
        lo, hi = -(2**15), 2**15 - 1
        lo, hi = (
            lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
            hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
        )
        np.testing.assert_allclose(window_to_unit(hu, 40, 400, func), (ref - lo) / (hi - lo), atol=1e-5)


def test_rescale_and_explicit_window_in_hounsfield_units(tmp_path: Path) -> None:
    path = _copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 2
    ds.save_as(path)
    img, meta = read_dicom(path, voi="window", window=(0.0, 1000.0))
    hu = ds.pixel_array.astype(float) * 2 - 1024
    np.testing.assert_allclose(img, window_to_unit(hu, 0.0, 1000.0), atol=1e-6)
    assert meta["voi"] == {"mode": "window", "center": 0.0, "width": 1000.0, "function": "LINEAR"}


def test_voi_lut_sequence_preferred_in_auto(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = _copy("MR_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.LUTData = (np.arange(255, -1, -1, dtype=np.uint16) * 257).tobytes()  # an inverting LUT: unmistakable
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    img, meta = read_dicom(path)
    assert meta["voi"]["mode"] == "voi_lut"
    px = np.clip(ds.pixel_array, 0, 255)
    np.testing.assert_allclose(img, (255 - px) / 255.0, atol=1e-6)


def test_bits_stored_masking_drops_high_bits(tmp_path: Path) -> None:
    clean = np.random.default_rng(0).integers(0, 4096, (32, 48)).astype(np.uint16)
    out = []
    for extra in (0, 0xF000):
        p = write_dicom(tmp_path / f"m{extra}.dcm", clean, bits_stored=12)
        ds = pydicom.dcmread(p)
        ds.PixelData = (clean | np.uint16(extra)).tobytes()  # garbage in the unused high bits
        ds.save_as(p)
        out.append(read_dicom(p, voi="none")[0])
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_allclose(out[0], clean / 4095.0, atol=1e-6)


def test_bad_dicoms_raise_errors_naming_file_and_field(tmp_path: Path) -> None:
    path = _copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(CorruptRecordError, match=r"nopix\.dcm.*PixelData"):
        read_dicom(tmp_path / "nopix.dcm")
    ds = pydicom.dcmread(path)
    del ds.PhotometricInterpretation
    ds.save_as(tmp_path / "nophoto.dcm")
    with pytest.raises(CorruptRecordError, match=r"nophoto\.dcm.*PhotometricInterpretation"):
        read_dicom(tmp_path / "nophoto.dcm")
    with pytest.raises(UnsupportedFormatError, match="multi-frame"):
        read_dicom(get_testdata_file("emri_small.dcm"))
    with pytest.raises(UnsupportedFormatError, match="RGB"):
        read_dicom(get_testdata_file("SC_rgb.dcm"))
    with pytest.raises(CorruptRecordError, match="not a readable DICOM"):
        (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
        read_dicom(tmp_path / "junk.dcm")


def test_jpeg_lossless_without_handler_names_the_extra() -> None:
    # Force a decoding plug-in that is not installed: the error must tell the user what to install.
    with pytest.raises(MissingDecoderError, match=r"vlp-medical\[gdcm\]"):
        read_dicom(get_testdata_file("JPEG-LL.dcm"), decoding_plugin="pylibjpeg")


def test_jpeg_lossless_with_gdcm_equals_uncompressed() -> None:
    pytest.importorskip("gdcm", reason="optional extra vlp-medical[gdcm] not installed")
    img, _ = read_dicom(get_testdata_file("JPEG-LL.dcm"), voi="none")
    assert img.shape == (1024, 256)


def test_sixteen_bit_png_is_explicit(tmp_path: Path) -> None:
    arr = (np.arange(64 * 64).reshape(64, 64) * 7).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "x16.png")
    img, meta = read_raster(tmp_path / "x16.png")
    assert meta["bit_depth"] == 16
    np.testing.assert_allclose(img, arr / 65535.0, atol=1e-6)
    img2, _ = read_raster(tmp_path / "x16.png", sixteen_bit="minmax")
    assert img2.min() == 0.0 and img2.max() == 1.0
    with pytest.raises(UnsupportedFormatError, match=r"x16\.png.*16-bit"):
        read_raster(tmp_path / "x16.png", sixteen_bit="error")


def test_colour_image_refused_as_grey_and_grey_repeated_as_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(UnsupportedFormatError, match="colour"):
        read_raster(tmp_path / "c.png", mode="L")
    img, meta = read_image(require_sample_data("cxr", "nih_00000001_000.png"), mode="RGB")
    assert img.shape == (512, 512, 3) and meta["grey_to_rgb"]


def test_transform_eval_and_train_are_deterministic() -> None:
    img, _ = read_image(require_sample_data("cxr", "nih_00000001_000.png"))
    t = CxrTransform(size=64)
    x = t(img)
    assert x.shape == (1, 64, 64)
    import torch

    a = t(img, train=True, generator=torch.Generator().manual_seed(3))
    b = t(img, train=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_written_monochrome1_phantom_round_trips(tmp_path: Path) -> None:
    px = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
    p1 = write_dicom(tmp_path / "m1.dcm", 4095 - px, photometric="MONOCHROME1", window=(2048, 4096))
    p2 = write_dicom(tmp_path / "m2.dcm", px, photometric="MONOCHROME2", window=(2048, 4096))
    a, ma = read_dicom(p1)
    b, _ = read_dicom(p2)
    assert ma["inverted"] and ma["view_position"] == "PA" and ma["pixel_spacing"] == (0.143, 0.143)
    np.testing.assert_allclose(a, b, atol=2e-3)  # same anatomy, opposite encoding -> same display
    assert b[:, -1].mean() > b[:, 0].mean()
