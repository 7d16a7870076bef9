"""Chest-radiograph phantoms with controlled findings and radiology-style reports, written as a MIMIC-CXR tree.

Each phantom is a projection-like frontal image (PA/AP display convention: the patient's right on the image left)
built from soft-tissue body, two lungs with vessel markings, ribs, spine, heart and hemidiaphragm domes. Six
findings are drawn independently with controlled presence and side:

- ``cardiomegaly``: cardiothoracic ratio (heart width / thorax width) 0.56-0.66 instead of 0.38-0.47;
- ``effusion``: fluid with a meniscus filling the costophrenic angle (right, left or both);
- ``pneumothorax``: apical-lateral lucency without lung markings, bounded by a visceral pleural line;
- ``consolidation``: a dense patchy airspace opacity in one lung zone;
- ``nodule``: a small round density;
- ``edema``: bilateral perihilar haze with basal septal lines.

Reports have FINDINGS and IMPRESSION sections with varied phrasing, negations and hedges (hedged findings are
labelled ``-1`` like the CheXpert labeler). Files: DICOM (MONOCHROME2 and MONOCHROME1 with windows, 12-bit) and
8-bit PNG, ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv`` plus ``phantom_truth.csv`` (ground truth per image).
A few lateral (``LL``) views are written so that view filtering has something to drop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FINDINGS",
    "FINDING_TO_CHEXPERT",
    "Phantom",
    "degrade",
    "make_fake_mimic_cxr",
    "render_phantom",
    "sample_phantom",
    "write_report",
]

FINDINGS: tuple[str, ...] = ("cardiomegaly", "effusion", "pneumothorax", "consolidation", "nodule", "edema")
FINDING_TO_CHEXPERT = {"cardiomegaly": "Cardiomegaly", "effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax",
                       "consolidation": "Consolidation", "nodule": "Lung Lesion", "edema": "Edema"}  # fmt: skip
PREVALENCE = {"cardiomegaly": 0.3, "effusion": 0.3, "pneumothorax": 0.25, "consolidation": 0.3, "nodule": 0.25,
              "edema": 0.25}  # fmt: skip
SIDES = ("right", "left")


@dataclass
class Phantom:
    """Ground truth of one phantom (what the report describes)."""

    present: dict[str, bool]
    side: dict[str, str] = field(default_factory=dict)  # "right" / "left" / "bilateral" for lateralised findings
    ctr: float = 0.44
    severity: dict[str, str] = field(default_factory=dict)  # "small"/"moderate"/"large" or "mild"/"marked"
    hedged: dict[str, bool] = field(default_factory=dict)
    zone: dict[str, str] = field(default_factory=dict)  # "upper"/"lower" lung zone
    anatomy: dict[str, float] = field(default_factory=dict)
    degradation: float = 0.0  # 0 = clean; up to 1 = low contrast + blur + heavy noise (a controlled ambiguity)


def sample_phantom(rng: np.random.Generator) -> Phantom:
    present = {f: bool(rng.random() < PREVALENCE[f]) for f in FINDINGS}
    ph = Phantom(present=present)
    ph.ctr = float(rng.uniform(0.56, 0.66) if present["cardiomegaly"] else rng.uniform(0.38, 0.47))
    for f in ("effusion", "pneumothorax", "consolidation", "nodule"):
        if present[f]:
            choices = ("right", "left", "bilateral") if f == "effusion" else SIDES
            probs = (0.4, 0.35, 0.25) if f == "effusion" else (0.5, 0.5)
            ph.side[f] = str(rng.choice(choices, p=probs))
            ph.zone[f] = str(rng.choice(("upper", "lower")))
    for f in FINDINGS:
        if present[f]:
            ph.severity[f] = str(
                rng.choice(("small", "moderate", "large") if f in ("effusion", "pneumothorax") else ("mild", "marked"))
            )
            ph.hedged[f] = bool(rng.random() < 0.08)
    ph.anatomy = {"scale": float(rng.uniform(0.9, 1.05)), "dx": float(rng.uniform(-0.05, 0.05)),
                  "dy": float(rng.uniform(-0.04, 0.04)), "exposure": float(rng.uniform(0.9, 1.1)),
                  "dome_l": float(rng.uniform(0.02, 0.08))}  # fmt: skip
    return ph


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of ``d < 0`` (signed distance-like) with edge width ``edge``."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -40, 40)))


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float = 0.02
) -> np.ndarray:
    return _soft(np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0, edge / max(min(rx, ry), 1e-3))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in ~[-1, 1]: a random ``cells x cells`` grid, bilinearly upsampled."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.clip(t.astype(int), 0, cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def render_phantom(ph: Phantom, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a phantom to float ``[size, size]`` in ``[0, 1]`` (MONOCHROME2: bright = attenuating)."""
    a = ph.anatomy
    s, dx, dy = a["scale"], a["dx"], a["dy"]
    lin = np.linspace(-1, 1, size)
    y, x = np.meshgrid(lin, lin, indexing="ij")
    x, y = (x - dx) / s, (y - dy) / s
    img = 0.06 + 0.44 * _ellipse(x, y, 0.0, 0.1, 0.9, 1.15, 0.04)  # air outside, soft-tissue body
    img += 0.18 * _soft(np.abs(x) - 0.07, 0.015)  # spine / mediastinum
    lung_cx, lung_rx, lung_cy, lung_ry = 0.36, 0.27, -0.08, 0.55
    dome = {"right": 0.38, "left": 0.38 + a["dome_l"]}
    lungs = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cx = sign * lung_cx
        shape = _ellipse(x, y, cx, lung_cy, lung_rx, lung_ry, 0.02)
        base = dome[side] - 0.16 * (1 - ((x - cx) / lung_rx) ** 2).clip(0, 1)  # diaphragm dome
        lungs[side] = shape * _soft(y - base, 0.015)
    lung = np.clip(lungs["right"] + lungs["left"], 0, 1)
    markings = 0.045 * (_smooth_noise(rng, size, 14) + 0.6 * _smooth_noise(rng, size, 28))
    # Heart: width = CTR x thorax width, shifted to the patient's left (image right).
    thorax = 2 * (lung_cx + lung_rx)
    hw = ph.ctr * thorax
    heart = _ellipse(x, y, 0.22 * hw, 0.22, hw / 2, 0.2 + 0.1 * hw, 0.02)
    air = lung * (1 - heart)
    img -= 0.34 * air
    img += air * markings
    img += 0.12 * heart
    for k in range(9):  # posterior ribs: bright arcs inside the lungs/body
        yc = -0.6 + 0.12 * k + 0.22 * x**2
        img += 0.07 * _soft(np.abs(y - yc) - 0.018, 0.006) * _ellipse(x, y, 0.0, 0.0, 0.78, 0.9, 0.03)
    gx = {"right": -lung_cx, "left": lung_cx}
    for side in SIDES:
        pf = ph.present
        sev = ph.severity
        if pf["effusion"] and ph.side["effusion"] in (side, "bilateral"):
            depth = {"small": 0.16, "moderate": 0.28, "large": 0.42}[sev["effusion"]]
            lat = (x - gx[side]) * (1 if side == "left" else -1) / lung_rx  # +1 laterally
            meniscus = dome[side] - depth - 0.1 * lat.clip(0, 1)  # fluid climbs the lateral wall
            fluid = lungs[side] * (1 - heart) * _soft(meniscus - y, 0.02)
            img += 0.34 * fluid
        if pf["pneumothorax"] and ph.side["pneumothorax"] == side:
            w = {"small": 0.13, "moderate": 0.19, "large": 0.26}[sev["pneumothorax"]]
            cx = gx[side] + (1 if side == "left" else -1) * lung_rx
            d = np.sqrt(((x - cx) / (lung_rx * 1.1)) ** 2 + ((y - lung_cy + 0.15) / lung_ry) ** 2)
            edge = 1.0 - w / lung_rx
            gas = lungs[side] * _soft(edge - d, 0.01)
            img -= gas * (markings + 0.14)  # no lung markings, darker
            img += 0.18 * lungs[side] * _soft(np.abs(d - edge) - 0.006, 0.004)  # visceral pleural line
        if pf["consolidation"] and ph.side["consolidation"] == side:
            cy = -0.2 if ph.zone["consolidation"] == "upper" else 0.12
            r = 0.13 if sev["consolidation"] == "mild" else 0.19
            blob = _ellipse(x, y, gx[side] + rng.uniform(-0.05, 0.05), cy, r, r * 1.2, 0.05) * lungs[side]
            img += blob * (0.24 + 0.08 * _smooth_noise(rng, size, 20))
        if pf["nodule"] and ph.side["nodule"] == side:
            cy = -0.25 if ph.zone["nodule"] == "upper" else 0.05
            r = 0.05 if sev["nodule"] == "mild" else 0.065
            img += 0.3 * _ellipse(x, y, gx[side] + rng.uniform(-0.1, 0.1), cy + rng.uniform(-0.06, 0.06), r, r, 0.01)
    if ph.present["edema"]:
        k = 0.14 if ph.severity["edema"] == "mild" else 0.22
        hila = sum(np.exp(-(((x - g * 0.55) / 0.22) ** 2 + ((y + 0.02) / 0.3) ** 2)) for g in (-lung_cx, lung_cx))
        img += k * hila * lung * (1 - heart)
        lines = _soft(np.abs(np.sin(y * 60)) - 0.15, 0.05) * _soft(-(y - 0.1), 0.03) * _soft(np.abs(x) - 0.45, 0.02)
        img += 0.06 * lines * lung
    img *= a["exposure"]
    img += 0.015 * rng.standard_normal(img.shape) + 0.02 * _smooth_noise(rng, size, 4)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def degrade(img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Controlled image-quality loss (under-penetrated, blurred, noisy film) at ``level`` in ``[0, 1]``.

    Contrast shrinks towards the mean by ``1 - 0.6·level``, a Gaussian blur of ``σ = 2.5·level`` pixels (at 128 px)
    softens edges, and white noise of s.d. ``0.12·level`` is added: findings stay in the image (and in the report)
    but get hard to see, which gives a probabilistic model something to be uncertain about. ``level = 0`` returns
    the image unchanged and draws nothing from ``rng``.
    """
    if level <= 0:
        return img
    size = img.shape[0]
    sigma = 2.5 * level * size / 128
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, r, mode="edge")
    blurred = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, pad)
    blurred = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, blurred)
    mean = float(blurred.mean())
    out = mean + (1 - 0.6 * level) * (blurred - mean) + 0.12 * level * rng.standard_normal(img.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_SIDE_TXT = {"right": "right", "left": "left", "bilateral": "bilateral"}
_POS = {
    "cardiomegaly": ["The heart is enlarged.", "Cardiomegaly is present.", "Enlarged cardiac silhouette.",
                     "The cardiac silhouette is enlarged.", "{sev} cardiomegaly."],
    "effusion": ["{sev} {side} pleural effusion.", "There is a {sev} {side} pleural effusion.",
                 "{side} pleural effusion with blunting of the costophrenic angle.", "{Side} effusion is {sev} in size."],
    "pneumothorax": ["{sev} {side} pneumothorax.", "There is a {sev} {side} apical pneumothorax.",
                     "{side} pneumothorax with a visible pleural line.", "A {side} pneumothorax is seen."],
    "consolidation": ["Consolidation in the {side} {zone} lobe.", "{side} {zone} zone airspace consolidation.",
                      "There is focal consolidation at the {side} {zone} lung.", "Airspace opacity in the {side} {zone} lung consistent with consolidation."],
    "nodule": ["{side} {zone} lung nodule.", "A nodule is seen in the {side} {zone} lung.",
               "There is a small nodular opacity in the {side} {zone} zone.", "Pulmonary nodule, {side} {zone} lung."],
    "edema": ["{sev} pulmonary edema.", "Findings consistent with pulmonary edema.",
              "Perihilar haziness and interstitial markings compatible with edema.", "There is {sev} interstitial edema."],
}  # fmt: skip
_NEG = {
    "cardiomegaly": ["Heart size is normal.", "The cardiac silhouette is within normal limits.", "No cardiomegaly.",
                     "Normal heart size."],
    "effusion": ["No pleural effusion.", "No effusion.", "Costophrenic angles are sharp.", "There is no pleural effusion."],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."],
    "consolidation": ["No focal consolidation.", "Lungs are clear without consolidation.", "No consolidation."],
    "nodule": ["No pulmonary nodules.", "No nodule is identified.", "No suspicious nodules."],
    "edema": ["No pulmonary edema.", "No edema.", "Pulmonary vasculature is normal without edema."],
}  # fmt: skip
_HEDGE = "Possible {name} cannot be excluded."
_HEDGE_NAMES = {"cardiomegaly": "mild cardiomegaly", "effusion": "small pleural effusion", "pneumothorax": "tiny pneumothorax",
                "consolidation": "early consolidation", "nodule": "nodule", "edema": "mild edema"}  # fmt: skip
_IMPRESSION_POS = {"cardiomegaly": "Cardiomegaly.", "effusion": "{Side} pleural effusion.", "pneumothorax": "{Side} pneumothorax.",
                   "consolidation": "{Side} {zone} consolidation.", "nodule": "{Side} lung nodule.", "edema": "Pulmonary edema."}  # fmt: skip
_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
]


def write_report(ph: Phantom, rng: np.random.Generator) -> tuple[str, dict[str, float]]:
    """FINDINGS/IMPRESSION report of a phantom and its CheXpert-labeler-style labels (1/0/-1, NaN = not mentioned)."""
    sentences: list[str] = []
    labels: dict[str, float] = {}
    order = list(FINDINGS)
    rng.shuffle(order)
    for f in order:
        name = FINDING_TO_CHEXPERT[f]
        if ph.present[f]:
            if ph.hedged.get(f):
                sentences.append(_HEDGE.format(name=_HEDGE_NAMES[f]))
                labels[name] = -1.0
                continue
            side = _SIDE_TXT.get(ph.side.get(f, ""), "")
            t = str(rng.choice(_POS[f])).format(
                sev=ph.severity.get(f, ""), side=side, Side=side.capitalize(), zone=ph.zone.get(f, "")
            )
            sentences.append(_cap(" ".join(t.split())))
            labels[name] = 1.0
        elif rng.random() < 0.75:  # negatives mentioned most of the time; otherwise "not mentioned" (blank)
            sentences.append(str(rng.choice(_NEG[f])))
            labels[name] = 0.0
        else:
            labels[name] = float("nan")
    if rng.random() < 0.5:
        sentences.insert(
            0,
            str(
                rng.choice(
                    ["PA and lateral views of the chest.", "Frontal view of the chest.", "Single portable view."]
                )
            ),
        )
    pos = [f for f in FINDINGS if ph.present[f] and not ph.hedged.get(f)]
    if pos:
        imp = " ".join(
            _cap(
                _IMPRESSION_POS[f].format(
                    Side=_SIDE_TXT.get(ph.side.get(f, ""), "").capitalize(), zone=ph.zone.get(f, "")
                )
            )
            for f in pos
        )
    else:
        imp = str(rng.choice(_NORMAL_IMPRESSION))
    labels["No Finding"] = 0.0 if any(ph.present.values()) else 1.0
    text = f"FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n FINDINGS:\n {' '.join(sentences)}\n\n IMPRESSION:\n {imp}\n"
    return text, labels


def _cap(t: str) -> str:
    t = t.strip()
    return t[:1].upper() + t[1:]


def make_fake_mimic_cxr(
    root: str | Path,
    n_images: int,
    size: int = 128,
    seed: int = 0,
    formats: tuple[str, ...] = ("dcm",),
    n_lateral: int = 4,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress: bool = False,
    degrade_fraction: float = 0.0,
) -> Path:
    """Write ``n_images`` frontal phantoms (one study and one patient each) as a MIMIC-CXR-shaped tree.

    Args:
        root: output folder.
        n_images: frontal images (plus ``n_lateral`` extra lateral views of the first studies).
        size: image side in pixels.
        seed: everything is a function of the seed.
        formats: ``("dcm",)`` writes DICOM only (alternating MONOCHROME2/MONOCHROME1); add ``"png"`` to also
            write each image as an 8-bit PNG beside it (``<dicom_id>.png``) for the MIMIC-CXR-JPG-style reader.
        n_lateral: lateral (``LL``) views to write (dropped by the default view filter).
        split_fractions: train/validate/test fractions (by patient).
        progress: progress bar.
        degrade_fraction: fraction of images given a controlled quality loss (:func:`degrade`, level uniform in
            ``[0.5, 1]``; the report still describes every finding). Drawn from a separate generator, so the
            phantoms, reports and splits are the same as with ``0`` (the default). Recorded per image as
            ``degradation`` in ``phantom_truth.csv``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from vlp_medical.io import write_dicom

    root = Path(root)
    rng = np.random.default_rng(seed)
    q_rng = np.random.default_rng([seed, 7919])  # degradation only: the main stream is untouched
    meta, splits, chex, truth = [], [], [], []
    names = ("train", "validate", "test")
    cut = np.cumsum(split_fractions)
    for i in tqdm(range(n_images), desc="phantoms", disable=not progress):
        ph = sample_phantom(rng)
        img = render_phantom(ph, size, rng)
        if degrade_fraction > 0 and q_rng.random() < degrade_fraction:
            ph.degradation = float(q_rng.uniform(0.5, 1.0))
            img = degrade(img, ph.degradation, q_rng)
        subject, study = 10_000_000 + i, 50_000_000 + i
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        text, labels = write_report(ph, rng)
        (folder / f"s{study}.txt").write_text(text)
        split = names[int(np.searchsorted(cut, (i + 0.5) / n_images))]
        views = [("PA" if rng.random() < 0.7 else "AP", img)]
        if i < n_lateral:
            views.append(("LL", img[:, ::-1].copy()))
        for v, (view, im) in enumerate(views):
            dicom_id = f"{i:06d}-{v}-{seed:04d}"
            px = np.round(im * 4095).astype(np.uint16)
            mono1 = (i + v) % 2 == 1
            if "dcm" in formats:
                write_dicom(folder / f"s{study}" / f"{dicom_id}.dcm", 4095 - px if mono1 else px,
                            photometric="MONOCHROME1" if mono1 else "MONOCHROME2", bits_stored=12,
                            window=(2047.5, 4096.0), view_position=view, uid_seed=f"{seed}-{i}-{v}")  # fmt: skip
            if "png" in formats:
                Image.fromarray(np.round(im * 255).astype(np.uint8)).save(folder / f"s{study}" / f"{dicom_id}.png")
            meta.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": study, "ViewPosition": view,
                         "Rows": size, "Columns": size})  # fmt: skip
            splits.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": split})
            truth.append({"dicom_id": dicom_id, **{f: int(ph.present[f]) for f in FINDINGS}, "ctr": round(ph.ctr, 4),
                          "sides": json.dumps(ph.side), "hedged": json.dumps(ph.hedged), "degradation": round(ph.degradation, 4)})  # fmt: skip
        chex.append({"subject_id": subject, "study_id": study, **labels})
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    cols = ["subject_id", "study_id", "No Finding", *FINDING_TO_CHEXPERT.values()]
    pd.DataFrame(chex)[cols].to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(truth).to_csv(root / "phantom_truth.csv", index=False)
    return root


def phantom_truth(root: str | Path) -> pd.DataFrame:
    """Ground-truth table written beside a phantom tree (``dicom_id`` + one 0/1 column per finding)."""
    return pd.read_csv(Path(root) / "phantom_truth.csv", dtype={"dicom_id": str})


def describe(ph: Phantom) -> dict[str, Any]:
    """Plain dict of a phantom (for plots and debugging)."""
    return {"present": ph.present, "side": ph.side, "ctr": ph.ctr, "severity": ph.severity}
