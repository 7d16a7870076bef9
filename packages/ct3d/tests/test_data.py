"""Transform presets, persistent cache, CT-RATE indexer and the phantom generator."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from vlp_core.data.errors import BadInputError, MissingColumnError
from vlp_core.testing import require_sample_data
from vlp_ct3d.ctrate import CTRATE_LABELS, CTReportDataset, ReportError, build_report, ctrate_index, parse_volume_name
from vlp_ct3d.synth import DISJOINT_PROMPTS, FINDINGS, make_fake_ctrate, make_phantom
from vlp_ct3d.transforms import CTPreset, LoadCTd, build_transforms, cached_dataset


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_ctrate(tmp_path_factory.mktemp("ctrate"), n_train=24, n_valid=8, seed=3)


def _box_volume(tmp_path: Path, lps: bool) -> Path:
    """A 60 × 40 × 30 mm box of +500 HU in air, voxels 2 × 2 × 5 mm, stored RAS or LPS."""
    data = np.full((50, 40, 16), -1000, np.int16)
    data[10:40, 10:30, 5:11] = 500
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    if lps:
        data = data[::-1, ::-1].copy()
        affine = np.diag([-2.0, -2.0, 5.0, 1.0])
        affine[:3, 3] = (98.0, 78.0, 0.0)  # same world positions as the RAS file
    p = tmp_path / f"box_{'lps' if lps else 'ras'}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(p))
    return p


def test_lps_file_comes_out_like_ras(tmp_path: Path) -> None:
    t = build_transforms(CTPreset((2.0, 2.0, 5.0), (50, 40, 16)))
    ras, lps = t({"image": str(_box_volume(tmp_path, False))}), t({"image": str(_box_volume(tmp_path, True))})
    torch.testing.assert_close(ras["image"], lps["image"])
    torch.testing.assert_close(ras["image_affine"], lps["image_affine"])
    assert nib.aff2axcodes(lps["image_affine"].numpy()) == ("R", "A", "S")


def test_preset_keeps_physical_size(tmp_path: Path) -> None:
    # Anisotropic 2 x 2 x 5 mm → isotropic 4 mm: the box must stay 60 x 40 x 30 mm (a resize would stretch it).
    out = build_transforms(CTPreset((4.0, 4.0, 4.0), (32, 32, 32)))({"image": str(_box_volume(tmp_path, False))})
    x = out["image"][0]
    assert x.shape == (32, 32, 32) and torch.allclose(out["image_spacing"], torch.tensor([4.0, 4.0, 4.0]))
    extent = [(x > 0.5).any(dim=tuple(d for d in range(3) if d != a)).sum().item() * 4.0 for a in range(3)]
    assert abs(extent[0] - 60) <= 4 and abs(extent[1] - 40) <= 4 and abs(extent[2] - 30) <= 4
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # window clipped


def test_window_clips_and_out_range(tmp_path: Path) -> None:
    t = build_transforms(CTPreset((2.0, 2.0, 5.0), (50, 40, 16), hu_window=(-1000, 0), out_range=(-1.0, 1.0)))
    x = t({"image": str(_box_volume(tmp_path, False))})["image"]
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # +500 HU clipped to the window top


def test_real_volume_through_preset_and_cache(tmp_path: Path) -> None:
    path = str(require_sample_data("ct", "totalseg", "example_ct.nii.gz"))
    t = build_transforms(CTPreset((6.0, 6.0, 6.0), (40, 40, 40)))
    ds = cached_dataset([{"image": path}], t, tmp_path / "cache")
    first, second = ds[0], ds[0]  # computed, then a cache hit
    assert list((tmp_path / "cache").glob("*.pt")), "nothing was cached"
    assert type(second["image"]) is torch.Tensor
    torch.testing.assert_close(first["image"], second["image"])
    torch.testing.assert_close(second["image_affine"], first["image_affine"])
    # 122 x 101 x 112 voxels of 3 mm: centre of the grid keeps its world position through the pipeline.
    src = nib.load(path)
    centre_src = src.affine @ np.r_[(np.array(src.shape) - 1) / 2, 1]
    centre_out = second["image_affine"].numpy() @ np.r_[(np.array([40, 40, 40]) - 1) / 2, 1]
    assert np.abs(centre_src - centre_out).max() <= 6.0
    torch.load(next((tmp_path / "cache").glob("*.pt")), weights_only=True)  # safe to load


def test_ctrate_index_by_name_and_patients(fake_root: Path) -> None:
    lab = fake_root / "multi_abnormality_labels" / "train_predicted_labels.csv"
    df = pd.read_csv(lab)
    df[["VolumeName", *reversed(CTRATE_LABELS)]].to_csv(lab, index=False)  # shuffled column order
    idx = ctrate_index(fake_root, "train")
    assert len(idx) == 24 and list(idx.attrs["labels"]) == list(CTRATE_LABELS)
    np.testing.assert_array_equal(idx["Cardiomegaly"].to_numpy(), df["Cardiomegaly"].to_numpy())
    assert idx["patient"].nunique() < len(idx)  # patients with two scans
    row = idx[idx["VolumeName"] == "train_10_b_1.nii.gz"].iloc[0]
    assert row["patient"] == "train_10" and Path(row["path"]).is_file()
    assert row["text"].startswith("Findings: ") and " Impression: " in row["text"]
    assert parse_volume_name("valid_885_a_1_fixed.nii.gz")["fixed"] is True
    with pytest.raises(BadInputError, match="not a CT-RATE volume name"):
        parse_volume_name("patient1.nii.gz")


def test_ctrate_missing_label_column(fake_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "r"
    shutil.copytree(fake_root, root)
    lab = root / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    pd.read_csv(lab).drop(columns=["Emphysema"]).to_csv(lab, index=False)
    with pytest.raises(MissingColumnError, match="Emphysema"):
        ctrate_index(root, "valid")


def test_report_builder() -> None:
    assert build_report("Heart normal.", "Not given.") == "Findings: Heart normal."
    assert build_report("  a\n b ", "c") == "Findings: a b Impression: c"
    with pytest.raises(ReportError, match="empty after cleaning"):
        build_report("Not given.", float("nan"), source="valid_1_a_1")


def test_v1_raw_storage_needs_rescale_from_metadata(tmp_path: Path) -> None:
    fixed = make_fake_ctrate(tmp_path / "fixed", n_train=3, n_valid=1, seed=5, storage="fixed")
    raw = make_fake_ctrate(tmp_path / "raw", n_train=3, n_valid=1, seed=5, storage="raw")
    idx_hu, idx_raw = ctrate_index(fixed, "train"), ctrate_index(raw, "train", hu_mode="apply_rescale")
    # Decoding: the raw file's header slope/intercept (3, 7) are meaningless; the metadata's (1, -1024) give HU back
    # exactly, up to the raw format's floor (stored values cannot go below 0 = -1024 HU).
    load_hu, load_raw = LoadCTd(hu_mode="already_hu"), LoadCTd(hu_mode="apply_rescale")
    row = idx_raw.iloc[0]
    hu = load_hu({"image": idx_hu.iloc[0]["path"]})["image"].as_tensor()
    got = load_raw({"image": row["path"], "slope": row["slope"], "intercept": row["intercept"]})["image"].as_tensor()
    assert (row["slope"], row["intercept"]) == (1.0, -1024.0)
    torch.testing.assert_close(got, hu.clamp(min=-1024.0), atol=0, rtol=0)
    # Through the whole pipeline: the floor only matters where resampling mixes sub-window air into a voxel near the
    # window's lower end, so the outputs agree closely on average and everywhere within a few HU.
    t_hu, t_raw = build_transforms("demo", hu_mode="already_hu"), build_transforms("demo", hu_mode="apply_rescale")
    a, b = CTReportDataset(idx_hu, t_hu)[0], CTReportDataset(idx_raw, t_raw)[0]
    diff = (a["image"] - b["image"]).abs()
    assert float(diff.mean()) < 1e-4 and float(diff.max()) < 0.01  # 0.01 of the [0, 1] window = 20 HU
    assert a["text"] == b["text"]


def test_empty_report_raises_or_is_skipped(fake_root: Path) -> None:
    idx = ctrate_index(fake_root, "valid")
    idx.loc[1, "text"] = ""
    t = build_transforms("demo")
    with pytest.raises(ReportError, match="empty"):
        CTReportDataset(idx, t)[1]
    ds = CTReportDataset(idx, t, skip_bad=True)
    assert ds[1] is None and ds.policy.n_skipped == 1


def test_phantom_findings_change_the_volume() -> None:
    base, _ = make_phantom({}, np.random.default_rng(1))
    heart, _ = make_phantom({"cardiomegaly": {"scale": 1.4}}, np.random.default_rng(1))
    eff, _ = make_phantom({"pleural_effusion": {"side": "left", "size_mm": 40}}, np.random.default_rng(1))
    lung = lambda v: int((v < -600).sum())  # noqa: E731
    assert lung(heart) < lung(base) and lung(eff) < lung(base)
    # Effusion on the left: only the left (x < 0 in RAS) lung loses volume.
    half = base.shape[0] // 2
    assert (base[:half] < -600).sum() > (eff[:half] < -600).sum() and abs(
        int((base[half:] < -600).sum()) - int((eff[half:] < -600).sum())
    ) < 20
    lung_hu = base[(base > -960) & (base < -600)]  # outside air sits at -1000 ± noise
    assert lung_hu.size > 1000 and -880 < np.median(lung_hu) < -820 and base.max() > 500  # lung and bone HU


def test_nodule_lies_in_its_lung_even_beside_an_enlarged_heart() -> None:
    # Before the fix a left-sided nodule could be drawn over an enlarged heart (soft tissue on soft tissue):
    # labelled present, invisible. Every nodule must now add dense voxels where the nodule-free phantom has lung.
    for seed in range(12):
        heart = {"cardiomegaly": {"scale": 1.5}, "pleural_effusion": {"side": "left", "size_mm": 40}}
        nod = {**heart, "nodule": {"side": "left", "lobe": "lower", "size_mm": 20}}
        base, _ = make_phantom(heart, np.random.default_rng(seed))
        with_nodule, _ = make_phantom(nod, np.random.default_rng(seed))
        new_dense = (with_nodule > -300) & (base < -600)
        assert new_dense.sum() >= 2, f"seed {seed}: nodule not visible in the lung"
        x = np.nonzero(new_dense)[0]
        assert (x < base.shape[0] // 2).all()  # left lung = low RAS x indices


def test_disjoint_prompts_never_occur_in_reports(fake_root: Path) -> None:
    reports = pd.concat([ctrate_index(fake_root, s) for s in ("train", "valid")])["text"].str.lower()
    from vlp_ct3d import synth  # the generator's phrase tables too, not only this sample of reports

    vocab = " ".join(" ".join(v) for table in (synth._POS, synth._NEG, synth._IMPRESSION) for v in table.values())
    vocab = (vocab + " " + " ".join(synth._NORMAL)).lower()
    assert set(DISJOINT_PROMPTS) == set(FINDINGS.values())
    for cls, (phrase, pos, neg) in DISJOINT_PROMPTS.items():
        for text in [phrase, *pos, *neg]:
            words = re.findall(r"[a-z]+", text.lower())
            grams = {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}
            hits = [g for g in grams if g in vocab or reports.str.contains(g, regex=False).any()]
            assert not hits, f"{cls}: prompt {text!r} shares {hits} with the report wording"
            assert cls.lower() not in text.lower()


def test_negative_prob_controls_the_stated_negatives() -> None:
    from vlp_ct3d.synth import _NEG, phantom_report

    negatives = {s for phrases in _NEG.values() for s in phrases}
    findings = {"cardiomegaly": {"scale": 1.4}}
    for p, expected in ((0.0, 0), (1.0, len(FINDINGS) - 1)):
        for seed in range(5):
            fin, imp = phantom_report(findings, np.random.default_rng(seed), negative_prob=p)
            assert sum(s in fin for s in negatives) == expected, (p, fin)
            assert "heart" in fin.lower() or "cardiomegaly" in fin.lower()
    reports = [phantom_report({}, np.random.default_rng(k), 0.5)[0] for k in range(200)]
    stated = [sum(n in fin for n in negatives) for fin in reports]
    assert 2.5 < np.mean(stated) < 3.5  # six absent findings, each stated with p = 0.5
    with pytest.raises(ValueError, match="negative_prob"):
        phantom_report(findings, np.random.default_rng(0), negative_prob=1.5)
