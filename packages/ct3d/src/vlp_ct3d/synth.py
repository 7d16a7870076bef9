"""Chest CT phantoms with controlled findings and CT-RATE-style reports, written in the CT-RATE layout.

Anatomy at realistic HU (air −1000, lung ≈ −850, fat ≈ −100, muscle/soft tissue ≈ 40, liver ≈ 60, blood-pool
heart ≈ 40 with myocardium ≈ 50, aorta, vertebral body ≈ +700), Gaussian noise and a partial-volume blur. Findings
with controlled presence, size, side and lobe: lung nodule, pleural effusion, cardiomegaly, consolidation,
pericardial effusion, emphysema. Each report states positives and negatives with varied phrasing
("Findings: … Impression: …"). The disjoint zero-shot prompts in :data:`DISJOINT_PROMPTS` use wording that the
report generator never produces (a test checks it).

Volumes are small on purpose (default 40 × 40 × 32 voxels of 8 × 8 × 10 mm, a 320 mm field of view), so a CPU
demo can train on hundreds of them. Half of them are stored in LPS voxel order (flipped axes, matching affine) so
the reorientation step is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlp_ct3d.ctrate import CTRATE_LABELS

__all__ = ["FINDINGS", "DISJOINT_PROMPTS", "CLASS_PROMPTS", "make_phantom", "phantom_report", "make_fake_ctrate"]

#: Finding → CT-RATE label column.
FINDINGS: dict[str, str] = {
    "nodule": "Lung nodule",
    "pleural_effusion": "Pleural effusion",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "pericardial_effusion": "Pericardial effusion",
    "emphysema": "Emphysema",
}
DEMO_CLASSES: tuple[str, ...] = tuple(FINDINGS.values())

#: CT-CLIP prompt pairs with the class name.
CLASS_PROMPTS: dict[str, tuple[list[str], list[str]]] = {
    c: ([f"{c} is present."], [f"{c} is not present."]) for c in DEMO_CLASSES
}
#: Prompts whose key phrase never occurs in generated reports: (key phrase, positive prompts, negative prompts).
DISJOINT_PROMPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "Lung nodule": ("focal round opacity within the lung parenchyma",
                    ["A focal round opacity within the lung parenchyma."],
                    ["Lung parenchyma without any focal round opacity."]),
    "Pleural effusion": ("collection between lung and chest wall",
                         ["Liquid collection between lung and chest wall."],
                         ["Nothing collected between lung and chest wall."]),
    "Cardiomegaly": ("abnormally large cardiac silhouette",
                     ["An abnormally large cardiac silhouette."],
                     ["Cardiac silhouette not abnormally large."]),
    "Consolidation": ("dense filling of alveolar spaces",
                      ["Dense filling of alveolar spaces in a lung region."],
                      ["Alveolar spaces aerated, without dense filling."]),
    "Pericardial effusion": ("liquid surrounding the cardiac chambers",
                             ["Liquid surrounding the cardiac chambers inside the sac."],
                             ["Sac around the cardiac chambers without liquid."]),
    "Emphysema": ("destroyed alveolar walls with hyperlucent parenchyma",
                  ["Destroyed alveolar walls with hyperlucent parenchyma."],
                  ["Intact alveolar walls, parenchyma not hyperlucent."]),
}  # fmt: skip

HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 40.0, "liver": 60.0, "blood": 40.0,
      "myocardium": 50.0, "bone": 700.0, "fluid": 8.0, "nodule": 30.0, "consolidation": 0.0,
      "emphysema": -960.0}  # fmt: skip


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, c: Sequence[float], r: Sequence[float]) -> np.ndarray:
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1.0


def make_phantom(
    findings: dict[str, dict[str, Any]],
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (40, 40, 32),
    spacing: tuple[float, float, float] = (8.0, 8.0, 10.0),
    noise_hu: float = 12.0,
    blur_voxels: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """One chest phantom in RAS voxel order.

    Args:
        findings: finding name → parameters (``side``, ``lobe``, ``size_mm``; see :func:`sample_findings`).
        rng: random generator (anatomy jitter and noise).
        shape: grid (R, A, S voxels).
        spacing: voxel size (mm).
        noise_hu: Gaussian noise standard deviation (HU).
        blur_voxels: Gaussian partial-volume blur (voxels).

    Returns:
        ``(hu [I, J, K] float32, affine [4, 4] RAS)``; the grid is centred on the world origin.
    """
    from scipy.ndimage import gaussian_filter

    sp = np.asarray(spacing, dtype=np.float64)
    origin = -(np.asarray(shape) - 1) / 2 * sp
    x, y, z = np.meshgrid(*[origin[i] + sp[i] * np.arange(shape[i]) for i in range(3)], indexing="ij")
    s = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-8, 8, size=2)
    x, y = x - shift[0], y - shift[1]
    vol = np.full(shape, HU["air"], dtype=np.float64)
    body = (x / (145 * s)) ** 2 + (y / (105 * s)) ** 2 <= 1
    inner = (x / (130 * s)) ** 2 + (y / (92 * s)) ** 2 <= 1
    vol[body] = HU["fat"]
    vol[inner] = HU["muscle"]
    # Lungs (RAS+: +x points to the patient's right, +y anterior, +z superior).
    lung_r = np.array([52, 68, 120]) * s
    emph = findings.get("emphysema")
    if emph:
        lung_r = lung_r * 1.06  # hyperinflation
    lungs = {}
    for side in ("right", "left"):
        cx = _side_sign(side) * 62 * s
        lungs[side] = _ellipsoid(x, y, z, (cx, -5, 25), lung_r) & inner
    # Heart (blood pool + myocardium), anterior and to the patient's left.
    heart_r = 44.0 * s * (findings["cardiomegaly"]["scale"] if "cardiomegaly" in findings else 1.0)
    hc = (_side_sign("left") * 14, 28, -25)
    heart_out = _ellipsoid(x, y, z, hc, (heart_r, heart_r * 0.85, heart_r * 0.9))
    heart_in = _ellipsoid(x, y, z, hc, (heart_r - 8, heart_r * 0.85 - 8, heart_r * 0.9 - 8))
    peri = findings.get("pericardial_effusion")
    sac = heart_out
    if peri:
        t = peri["size_mm"]
        sac = _ellipsoid(x, y, z, hc, (heart_r + t, heart_r * 0.85 + t, heart_r * 0.9 + t))
    for side in lungs:
        lungs[side] &= ~sac
    lung_any = lungs["right"] | lungs["left"]
    vol[lung_any] = HU["lung"]
    if emph:
        patches = gaussian_filter(rng.standard_normal(shape), 1.0) > -0.2
        upper = z > 10
        vol[lung_any & patches & upper] = HU["emphysema"]
        vol[lung_any & ~upper & patches] = -900.0
    if peri:
        vol[sac & ~heart_out] = HU["fluid"]
    vol[heart_out] = HU["myocardium"]
    vol[heart_in] = HU["blood"]
    # Aorta (descending, left of the spine) and vertebral body.
    vol[((x - _side_sign("left") * 22) ** 2 + (y + 52) ** 2 <= 12**2) & inner] = HU["blood"]
    vol[(x**2 + (y + 78) ** 2 <= 17**2) & inner] = HU["bone"]
    vol[(x**2 + (y - 88 * s) ** 2 <= 9**2) & inner & (z > -60)] = HU["bone"]  # sternum
    # Liver below the right hemidiaphragm.
    liver = _ellipsoid(x, y, z, (_side_sign("right") * 45, 5, -150), (95, 75, 75)) & inner & ~lung_any
    vol[liver] = HU["liver"]
    # Findings inside the lungs.
    if "pleural_effusion" in findings:
        p = findings["pleural_effusion"]
        for side in _sides(p["side"]):
            lung = lungs[side]
            ys = np.where(lung, y, np.inf).min()
            vol[lung & (y <= ys + p["size_mm"])] = HU["fluid"]
    if "consolidation" in findings:
        p = findings["consolidation"]
        side = p["side"]
        cz = 70 if p["lobe"] == "upper" else -10
        blob = _ellipsoid(x, y, z, (_side_sign(side) * 62 * s, 0, cz), (p["size_mm"], p["size_mm"] * 1.2, p["size_mm"]))
        vol[blob & lungs[side]] = HU["consolidation"] + rng.normal(0, 15, size=int((blob & lungs[side]).sum()))
    if "nodule" in findings:
        p = findings["nodule"]
        side = p["side"]
        r = p["size_mm"] / 2
        # Centre drawn until the nodule lies (almost) wholly in its lung: a nodule drawn over an enlarged heart or
        # an effusion would be labelled present but invisible.
        for _ in range(50):
            cz = (75 if p["lobe"] == "upper" else 0) + rng.uniform(-15, 15)
            cx = _side_sign(side) * (55 + rng.uniform(-10, 10)) * s
            blob = _ellipsoid(x, y, z, (cx, rng.uniform(-25, 20), cz), (r, r, r))
            if (blob & lungs[side] & (vol < -500)).sum() >= 0.8 * blob.sum() > 0:
                break
        vol[blob] = HU["nodule"]
    vol = gaussian_filter(vol, blur_voxels) + rng.normal(0.0, noise_hu, size=shape)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = origin
    return vol.astype(np.float32), affine


def _side_sign(side: str) -> float:
    # RAS+ (NIfTI): x grows towards the patient's right (DICOM LPS+: towards the left).
    return 1.0 if side == "right" else -1.0


def _sides(side: str) -> list[str]:
    return ["right", "left"] if side == "bilateral" else [side]


def sample_findings(rng: np.random.Generator, prevalence: float = 0.3) -> dict[str, dict[str, Any]]:
    """Draw each finding independently with probability ``prevalence`` and its size/side/lobe."""
    out: dict[str, dict[str, Any]] = {}
    if rng.random() < prevalence:
        out["nodule"] = {"side": rng.choice(["right", "left"]), "lobe": rng.choice(["upper", "lower"]),
                         "size_mm": int(rng.integers(20, 31))}  # fmt: skip
    if rng.random() < prevalence:
        out["pleural_effusion"] = {
            "side": rng.choice(["right", "left", "bilateral"]),
            "size_mm": int(rng.integers(20, 45)),
        }
    if rng.random() < prevalence:
        out["cardiomegaly"] = {"scale": float(rng.uniform(1.3, 1.5))}
    if rng.random() < prevalence:
        out["consolidation"] = {"side": rng.choice(["right", "left"]), "lobe": rng.choice(["upper", "lower"]),
                                "size_mm": int(rng.integers(28, 42))}  # fmt: skip
    if rng.random() < prevalence:
        out["pericardial_effusion"] = {"size_mm": int(rng.integers(12, 22))}
    if rng.random() < prevalence:
        out["emphysema"] = {"kind": rng.choice(["centrilobular", "paraseptal"])}
    return out


_POS = {
    "nodule": ["A {size_mm} mm solid nodule is seen in the {lobe} lobe of the {side} lung.",
               "{Side} {lobe} lobe: nodule measuring {size_mm} mm.",
               "There is a nodular lesion of {size_mm} mm in the {side} lung {lobe} lobe."],
    "pleural_effusion": ["{Side} pleural effusion with a thickness of {size_mm} mm.",
                         "Pleural effusion is noted on the {side} side, measuring {size_mm} mm.",
                         "Effusion in the {side} pleural space reaching {size_mm} mm."],
    "cardiomegaly": ["The heart is enlarged.", "Cardiomegaly was observed.", "Heart size is increased."],
    "consolidation": ["Consolidation in the {lobe} lobe of the {side} lung.",
                      "{Side} {lobe} lobe shows a consolidated area.",
                      "An area of consolidation is seen in the {side} {lobe} lobe."],
    "pericardial_effusion": ["Pericardial effusion measuring {size_mm} mm.",
                             "Pericardial fluid with a thickness of {size_mm} mm is seen.",
                             "There is pericardial effusion reaching {size_mm} mm."],
    "emphysema": ["{Kind} emphysematous changes in both lungs.", "{Kind} emphysema is noted, most marked in the upper lobes.",
                  "Both lungs show {kind} emphysema."],
}  # fmt: skip
_NEG = {
    "nodule": ["No pulmonary nodule is detected.", "No nodular lesion was observed in either lung.",
               "There is no nodule in the lungs."],
    "pleural_effusion": ["No pleural effusion.", "No effusion in the pleural spaces.", "Pleural effusion was not observed."],
    "cardiomegaly": ["Heart size is normal.", "No cardiomegaly.", "The heart is of normal size."],
    "consolidation": ["No consolidation.", "No consolidated area is seen in the lungs.",
                      "There is no consolidation in either lung."],
    "pericardial_effusion": ["No pericardial effusion.", "Pericardial effusion was not observed.",
                             "There is no pericardial fluid."],
    "emphysema": ["No emphysema.", "No emphysematous changes.", "There is no emphysema in the lungs."],
}  # fmt: skip
_IMPRESSION = {
    "nodule": ["{Side} lung nodule.", "Pulmonary nodule in the {side} {lobe} lobe."],
    "pleural_effusion": ["{Side} pleural effusion.", "Pleural effusion ({side})."],
    "cardiomegaly": ["Cardiomegaly.", "Enlarged heart."],
    "consolidation": ["{Side} {lobe} lobe consolidation.", "Consolidation, {side} lung."],
    "pericardial_effusion": ["Pericardial effusion.", "Pericardial fluid."],
    "emphysema": ["Emphysema.", "{Kind} emphysema."],
}  # fmt: skip
_NORMAL = ["Trachea and main bronchi are patent.", "Mediastinal structures are within normal limits.",
           "Thoracic aorta has a normal diameter.", "Bones in the scan area are unremarkable."]  # fmt: skip


def _fill(t: str, p: dict[str, Any]) -> str:
    side = str(p.get("side", ""))
    kind = str(p.get("kind", ""))
    s = t.format(size_mm=p.get("size_mm", ""), side=side, Side=side.capitalize(), lobe=p.get("lobe", ""),
                 kind=kind, Kind=kind.capitalize())  # fmt: skip
    return s[0].upper() + s[1:]


def phantom_report(
    findings: dict[str, dict[str, Any]], rng: np.random.Generator, negative_prob: float = 0.85
) -> tuple[str, str]:
    """``(Findings_EN, Impressions_EN)``: every positive and, each with probability ``negative_prob``, the negatives
    (pertinent negatives), with varied phrasing."""
    if not 0.0 <= negative_prob <= 1.0:
        raise ValueError(f"negative_prob must be in [0, 1], got {negative_prob}")
    sentences = [str(rng.choice(_NORMAL))]
    for name in rng.permutation(list(FINDINGS)):
        if name in findings:
            sentences.append(_fill(str(rng.choice(_POS[name])), findings[name]))
        elif rng.random() < negative_prob:
            sentences.append(str(rng.choice(_NEG[name])))
    impression = [_fill(str(rng.choice(_IMPRESSION[n])), findings[n]) for n in FINDINGS if n in findings]
    return " ".join(sentences), " ".join(impression) if impression else "No acute abnormality."


def make_fake_ctrate(
    root: str | Path,
    n_train: int = 400,
    n_valid: int = 120,
    seed: int = 0,
    prevalence: float = 0.3,
    storage: str = "fixed",
    shape: tuple[int, int, int] = (40, 40, 32),
    spacing: tuple[float, float, float] = (8.0, 8.0, 10.0),
    progress: bool = False,
    negative_prob: float = 0.85,
) -> Path:
    """Write phantoms + reports/labels/metadata CSVs in the CT-RATE layout.

    Args:
        root: output root.
        n_train: training volumes (one per patient; every 10th patient gets a second scan ``_b``).
        n_valid: validation volumes.
        seed: generator seed.
        prevalence: probability of each finding.
        storage: ``"fixed"`` (int16 HU, like CT-RATE ``*_fixed``; read with ``hu_mode="already_hu"``) or ``"raw"``
            (uint16 HU + 1024 with a meaningless header slope, the true slope/intercept only in the metadata CSV,
            like CT-RATE v1; read with ``hu_mode="apply_rescale"``).
        shape: grid size.
        spacing: voxel size (mm).
        progress: progress bar.
        negative_prob: probability that a report states a given absent finding ("No pleural effusion.").
    """
    import nibabel as nib
    from tqdm.auto import tqdm

    if not 0.0 <= negative_prob <= 1.0:
        raise ValueError(f"negative_prob must be in [0, 1], got {negative_prob}")
    if storage not in ("fixed", "raw"):
        raise ValueError(f"storage must be 'fixed' or 'raw', got {storage!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        reports, labels, meta = [], [], []
        names: list[tuple[int, str]] = []
        pid = 0
        while len(names) < n:
            pid += 1
            names.append((pid, "a"))
            if pid % 10 == 0 and len(names) < n:
                names.append((pid, "b"))
        for pid, scan in tqdm(names, desc=f"phantoms {split}", disable=not progress):
            f = sample_findings(rng, prevalence)
            hu, affine = make_phantom(f, rng, shape, spacing)
            if rng.random() < 0.5:  # store in LPS voxel order
                hu = hu[::-1, ::-1].copy()
                flip = np.diag([-1.0, -1.0, 1.0, 1.0])
                flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
                affine = affine @ flip
            name = f"{split}_{pid}_{scan}_1.nii.gz"
            folder = root / "dataset" / split / f"{split}_{pid}" / f"{split}_{pid}_{scan}"
            folder.mkdir(parents=True, exist_ok=True)
            if storage == "fixed":
                img = nib.Nifti1Image(np.rint(hu).astype(np.int16), affine)
                slope, intercept = 1.0, 0.0
            else:
                img = nib.Nifti1Image(np.clip(np.rint(hu + 1024), 0, 65535).astype(np.uint16), affine)
                img.header.set_slope_inter(3.0, 7.0)  # deliberately meaningless, as in CT-RATE v1 headers
                slope, intercept = 1.0, -1024.0
            nib.save(img, str(folder / name))
            fin, imp = phantom_report(f, rng, negative_prob)
            reports.append({"VolumeName": name, "ClinicalInformation_EN": "Not given.",
                            "Technique_EN": "Non-contrast chest CT.", "Findings_EN": fin, "Impressions_EN": imp})  # fmt: skip
            row = {"VolumeName": name, **{c: 0 for c in CTRATE_LABELS}}
            for k in f:
                row[FINDINGS[k]] = 1
            labels.append(row)
            meta.append({"VolumeName": name, "RescaleSlope": slope, "RescaleIntercept": intercept,
                         "XYSpacing": f"[{spacing[0]}, {spacing[1]}]", "ZSpacing": spacing[2]})  # fmt: skip
        rep_name, lab_name, meta_name = (("train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv")
                                         if split == "train" else ("validation_reports.csv", "valid_predicted_labels.csv",
                                                                   "validation_metadata.csv"))  # fmt: skip
        for sub, fname, rows in (("radiology_text_reports", rep_name, reports),
                                 ("multi_abnormality_labels", lab_name, labels), ("metadata", meta_name, meta)):  # fmt: skip
            (root / sub).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(root / sub / fname, index=False)
    (root / "PHANTOMS.txt").write_text(
        f"vlp-ct3d phantoms seed={seed} storage={storage} shape={shape} spacing={spacing} "
        f"negative_prob={negative_prob}\n"
    )
    return root
