"""Indexers on files written in the datasets' documented layouts, report sections, label policies, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vlp_core.data import InvalidValueError, MissingColumnError
from vlp_medical.datasets import (
    CHEXPERT_LABELS,
    CxrTextDataset,
    chexpert_index,
    collate_cxr,
    iu_xray_index,
    manifest_index,
    mimic_cxr_index,
    parse_labels,
)
from vlp_medical.io import read_dicom
from vlp_medical.reports import MissingSectionError, extract_sections, report_text, split_sentences
from vlp_medical.synth import FINDINGS, make_fake_mimic_cxr, phantom_truth
from vlp_medical.transforms import CxrTransform

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:
 PA and lateral views of the chest provided.  There is no focal consolidation,
 effusion, or pneumothorax.  The cardiomediastinal silhouette is normal.

 IMPRESSION:
 No acute intrathoracic process.
"""


def test_section_extraction_mimic_style() -> None:
    sec = extract_sections(MIMIC_REPORT)
    assert sec["findings"].startswith("PA and lateral views") and "pneumothorax." in sec["findings"]
    assert sec["impression"] == "No acute intrathoracic process."
    assert "___" not in sec["indication"]
    assert report_text(MIMIC_REPORT, ("impression",)) == "IMPRESSION: No acute intrathoracic process."
    with pytest.raises(MissingSectionError, match="study.txt.*FINDINGS/IMPRESSION"):
        report_text("INDICATION: cough.", source="study.txt")
    assert split_sentences("FINDINGS: No effusion. Heart is enlarged. IMPRESSION: Cardiomegaly.") == [
        "No effusion", "Heart is enlarged", "Cardiomegaly"]  # fmt: skip


def test_label_parsing_policies_and_bad_values() -> None:
    df = pd.DataFrame({"A": [1, 0, -1, None], "B": ["1.0", "", "-1", "0"]})
    ones = parse_labels(df, ["A", "B"], "x.csv", "ones")
    assert ones["A"].tolist() == [1, 0, 1, 0] and ones["B"].tolist() == [1, 0, 1, 0]
    zeros = parse_labels(df, ["A"], "x.csv", "zeros")
    assert zeros["A"].tolist() == [1, 0, 0, 0]
    ign = parse_labels(df, ["A"], "x.csv", "ignore")
    assert math.isnan(ign["A"][2]) and ign["A"][3] == 0
    with pytest.raises(InvalidValueError, match=r"x\.csv.*'A'.*row 1.*2"):
        parse_labels(pd.DataFrame({"A": [1, 2]}), ["A"], "x.csv")
    with pytest.raises(InvalidValueError, match="'A'.*row 0.*'yes'"):
        parse_labels(pd.DataFrame({"A": ["yes"]}), ["A"], "x.csv")
    with pytest.raises(MissingColumnError, match="x.csv"):
        parse_labels(df, ["C"], "x.csv")


@pytest.fixture(scope="module")
def phantom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_mimic_cxr(
        tmp_path_factory.mktemp("mimic"), 40, size=64, seed=3, formats=("dcm", "png"), n_lateral=3
    )


def test_mimic_index_on_phantom_tree(phantom_tree: Path) -> None:
    idx = mimic_cxr_index(phantom_tree)
    assert len(idx) == 40 and idx.attrs["report"]["wrong_view"] == 3  # laterals dropped, counted
    assert set(idx["split"]) == {"train", "validate", "test"}
    assert set(idx.attrs["labels"]) >= {"Cardiomegaly", "Pleural Effusion", "No Finding"}
    assert all(t.startswith("FINDINGS:") and "IMPRESSION:" in t for t in idx["text"])
    # Labels aligned by name with the report text: a labeled-positive effusion is written in its report.
    pos = idx[idx["Pleural Effusion"] == 1]
    assert len(pos) and all("effusion" in t.lower() for t in pos["text"])
    # Hedged findings (-1) are NaN under "ignore" and 1 under "ones".
    ones = mimic_cxr_index(phantom_tree, uncertain="ones")
    assert ones[idx.attrs["labels"]].isna().sum().sum() == 0
    all_views = mimic_cxr_index(phantom_tree, views=None)
    assert len(all_views) == 43
    png = mimic_cxr_index(phantom_tree, image_suffix=".png")
    a, ma = read_dicom(idx["path"][1])
    b = np.asarray(Image.open(png["path"][1]), dtype=np.float32) / 255
    assert np.abs(a - b).mean() < 0.01  # the DICOM (MONOCHROME1 for odd rows) and PNG show the same image
    assert ma["inverted"]


def test_mimic_bad_rows_error_or_skip(phantom_tree: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "m"
    shutil.copytree(phantom_tree, root)
    rep = next((root / "files").rglob("s50000005.txt"))
    rep.write_text("INDICATION: cough only.")
    with pytest.raises(MissingSectionError, match="s50000005.txt"):
        mimic_cxr_index(root)
    idx = mimic_cxr_index(root, skip_bad=True)
    assert len(idx) == 39 and idx.attrs["report"]["skipped"]["n_skipped"] == 1
    chex = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    chex.loc[2, "Edema"] = 3
    chex.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(InvalidValueError, match="chexpert.csv.*'Edema'.*row 2"):
        mimic_cxr_index(root, skip_bad=True)


def test_phantom_truth_matches_report_labels(phantom_tree: Path) -> None:
    truth = phantom_truth(phantom_tree).set_index("dicom_id")
    idx = mimic_cxr_index(phantom_tree, uncertain="ones")
    t = truth.loc[idx["key"]]
    assert (idx["Cardiomegaly"].to_numpy() == t["cardiomegaly"].to_numpy()).all()
    assert set(FINDINGS) <= set(truth.columns)


def _write_chexpert(root: Path) -> None:
    rows = []
    for i in range(4):
        rec = {"Path": f"{root.name}/train/patient0000{i}/study1/view1_frontal.jpg", "Sex": "F", "Age": 50,
               "Frontal/Lateral": "Frontal" if i < 3 else "Lateral", "AP/PA": "PA"}  # fmt: skip
        rec.update({c: [1, 0, -1, None][(i + j) % 4] for j, c in enumerate(CHEXPERT_LABELS)})
        rows.append(rec)
        p = root / "train" / f"patient0000{i}" / "study1" / "view1_frontal.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 100 + i, np.uint8)).save(p)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)


def test_chexpert_index_policies(tmp_path: Path) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    _write_chexpert(root)
    idx = chexpert_index(root, "train", uncertain="ones")
    assert len(idx) == 3 and idx.attrs["report"]["wrong_view"] == 1
    assert Path(idx["path"][0]).is_file() and idx["patient"][0] == "patient00000"
    assert idx["No Finding"].tolist() == [1, 0, 1]  # 1, 0, -1 -> ones
    assert chexpert_index(root, "train", uncertain="zeros")["No Finding"].tolist() == [1, 0, 0]
    ds = CxrTextDataset(idx, transform=CxrTransform(size=16))
    s = ds[0]
    assert s["image"].shape == (1, 16, 16) and s["labels"].shape == (14,) and "text" not in s


def test_iu_xray_index(tmp_path: Path) -> None:
    (tmp_path / "images" / "images_normalized").mkdir(parents=True)
    pd.DataFrame({"uid": [1, 2, 3], "findings": ["Heart normal.", None, "No effusion."],
                  "impression": ["Normal.", None, "Clear."]}).to_csv(tmp_path / "indiana_reports.csv", index=False)  # fmt: skip
    pd.DataFrame({"uid": [1, 1, 2, 3], "filename": ["1_a.png", "1_b.png", "2_a.png", "3_a.png"],
                  "projection": ["Frontal", "Lateral", "Frontal", "Frontal"]}).to_csv(tmp_path / "indiana_projections.csv", index=False)  # fmt: skip
    with pytest.raises(Exception, match="row 1: empty findings/impression"):
        iu_xray_index(tmp_path)
    idx = iu_xray_index(tmp_path, skip_bad=True)
    assert idx["key"].tolist() == ["1_a.png", "3_a.png"] and idx.attrs["report"]["wrong_view"] == 1
    assert idx["text"][0] == "FINDINGS: Heart normal. IMPRESSION: Normal."


def test_manifest_and_dataset_skip_bad(tmp_path: Path) -> None:
    Image.fromarray(np.full((20, 30), 7, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    pd.DataFrame({"path": ["a.png", "b.png"], "text": ["x", "y"], "patient": ["p1", "p2"], "Edema": [1, ""]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    idx = manifest_index(tmp_path / "m.csv", labels=["Edema"], patient_split_seed=0)
    assert idx["Edema"].tolist() == [1.0, 0.0]
    strict = CxrTextDataset(idx, transform=CxrTransform(size=8))
    with pytest.raises(Exception, match="b.png"):
        strict[1]
    ds = CxrTextDataset(idx, transform=CxrTransform(size=8), skip_bad=True)
    batch = collate_cxr([ds[0], ds[1]])
    assert batch["image"].shape == (1, 1, 8, 8) and batch["text"] == ["x"] and ds.policy.n_skipped == 1


def test_dataset_aspects_collate_to_flat_list_with_owner() -> None:
    frame = pd.DataFrame({"key": ["a", "b"], "path": ["-", "-"], "text": ["t0", "t1"], "split": "train"})
    ds = CxrTextDataset(frame, texts=lambda row: [f"{row['text']}-{k}" for k in range(1 + int(row["key"] == "b"))])
    ds.image = lambda i, epoch=0: torch.zeros(1, 4, 4)  # type: ignore[method-assign]
    batch = collate_cxr([ds[0], ds[1]])
    assert batch["aspects"] == ["t0-0", "t1-0", "t1-1"] and batch["aspects_owner"].tolist() == [0, 1, 1]
