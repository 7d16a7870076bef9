"""The phantoms' controlled ambiguity factor: degraded images, same reports, recorded in the ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlp_medical.io import read_dicom
from vlp_medical.synth import degrade, make_fake_mimic_cxr, phantom_truth, render_phantom, sample_phantom


def test_degrade_lowers_contrast_blurs_and_adds_noise() -> None:
    rng = np.random.default_rng(0)
    img = render_phantom(sample_phantom(rng), 64, rng)
    g = np.random.default_rng(1)
    state = g.bit_generator.state
    assert degrade(img, 0.0, g) is img and g.bit_generator.state == state  # level 0: untouched, no draws
    out = degrade(img, 1.0, np.random.default_rng(2))
    assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1

    def edges(x: np.ndarray) -> float:  # mean gradient of a 4x4 block average (noise averaged out)
        b = x.reshape(16, 4, 16, 4).mean((1, 3))
        return float(np.abs(np.diff(b, axis=0)).mean() + np.abs(np.diff(b, axis=1)).mean())

    assert edges(out) < 0.75 * edges(img)  # structure (findings included) is harder to see
    assert np.std(out - degrade(img, 1.0, np.random.default_rng(3))) > 0.05  # heavy pixel noise
    mild = degrade(img, 0.5, np.random.default_rng(2))
    assert edges(out) < edges(mild) < edges(img)


def test_degraded_tree_keeps_reports_and_clean_images_and_records_the_level(tmp_path: Path) -> None:
    clean = make_fake_mimic_cxr(tmp_path / "a", 24, size=32, seed=4, n_lateral=0)
    mixed = make_fake_mimic_cxr(tmp_path / "b", 24, size=32, seed=4, n_lateral=0, degrade_fraction=0.5)
    ta, tb = phantom_truth(clean), phantom_truth(mixed)
    assert (ta["degradation"] == 0).all()
    hit = tb["degradation"] > 0
    assert 4 <= hit.sum() <= 20 and tb.loc[hit, "degradation"].between(0.5, 1.0).all()
    # Same phantoms, labels and reports; only the degraded images differ.
    cols = [c for c in ta.columns if c != "degradation"]
    assert ta[cols].equals(tb[cols])
    reports_a = sorted(p.read_text() for p in (tmp_path / "a").rglob("*.txt"))
    reports_b = sorted(p.read_text() for p in (tmp_path / "b").rglob("*.txt"))
    assert reports_a == reports_b
    for dicom_id, level in zip(tb["dicom_id"], tb["degradation"]):
        pa = next((tmp_path / "a").rglob(f"{dicom_id}.dcm"))
        pb = next((tmp_path / "b").rglob(f"{dicom_id}.dcm"))
        same = np.array_equal(read_dicom(pa)[0], read_dicom(pb)[0])
        assert same == (level == 0), dicom_id
