"""CT volume readers: NIfTI (nibabel) and DICOM series (pydicom), both returning a :class:`CTVolume` in HU with a
RAS world affine (NIfTI convention).

DICOM series assembly is our own, not MONAI's ``PydicomReader`` (which orders slices by InstanceNumber and takes
the slice step from the z component only): one SeriesInstanceUID; slices ordered by ImagePositionPatient
projected on the slice normal; the slice step taken from those positions (never from SliceThickness); the
modality LUT (RescaleSlope/Intercept) applied exactly once per slice; gaps, duplicate positions, mixed
orientations, mixed series, tilted (sheared) stacks → :class:`SeriesError` naming the folder and the problem.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlp_core.data.errors import BadInputError, CorruptRecordError

__all__ = [
    "HU_MODES",
    "CTVolume",
    "SeriesError",
    "ModalityWarning",
    "HURangeWarning",
    "check_affine",
    "read_ct",
    "read_nifti",
    "read_dicom_series",
    "save_nifti",
]

#: ``already_hu``: voxel values (after the NIfTI header's own scaling) are HU (CT-RATE ``*_fixed`` volumes,
#: TotalSegmentator). ``apply_rescale``: raw stored values, HU = slope·x + intercept with slope/intercept given by
#: the caller (CT-RATE v1 metadata CSV); the header's scaling is ignored because it is meaningless there.
HU_MODES = ("already_hu", "apply_rescale")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SeriesError(BadInputError):
    """A DICOM series cannot be assembled into one regular volume."""


class ModalityWarning(UserWarning):
    """A file passed as CT is not CT."""


class HURangeWarning(UserWarning):
    """Voxel values do not look like Hounsfield units (wrong ``hu_mode``?)."""


@dataclass
class CTVolume:
    """One CT volume in HU.

    Attributes:
        array: ``[I, J, K]`` float32 HU; voxel ``(i, j, k)`` sits at ``affine @ (i, j, k, 1)``.
        affine: 4×4 voxel → world (RAS, mm) matrix, NIfTI convention.
        source: file or folder it came from (for error messages).
        meta: reader details (modality, series UID, slice count, ...); never patient identifiers.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, ...]:
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))

    def to_metatensor(self) -> Any:
        """``MetaTensor [1, I, J, K]`` with this affine (what MONAI's array transforms expect)."""
        import torch
        from monai.data import MetaTensor

        return MetaTensor(
            torch.from_numpy(np.ascontiguousarray(self.array, dtype=np.float32))[None],
            affine=torch.as_tensor(self.affine, dtype=torch.float64),
            meta={"filename_or_obj": self.source, "space": "RAS"},
        )


def check_affine(affine: np.ndarray, source: str = "", tol: float = 1e-3) -> None:
    """Raise :class:`BadInputError` unless ``affine`` is finite, non-singular and its axes orthogonal (no shear)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise BadInputError(f"{source}: affine must be a finite 4x4 matrix, got {a.tolist()}")
    m = a[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if (norms < 1e-6).any():
        raise BadInputError(f"{source}: affine is singular (voxel sizes {norms.tolist()})")
    unit = m / norms
    gram = unit.T @ unit
    off = np.abs(gram - np.eye(3)).max()
    if off > tol:
        raise BadInputError(
            f"{source}: affine has sheared / non-orthogonal axes (max |cos| between axes {off:.4f}); "
            "resample it to an orthogonal grid first, vlp does not reinterpret oblique grids"
        )


def _check_voxels(array: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise CorruptRecordError(f"{source}: {int(bad.sum())} NaN/Inf voxels; vlp does not fill them silently")


def _check_hu_range(array: np.ndarray, source: str, hu_mode: str) -> None:
    sample = array.ravel()[:: max(1, array.size // 500_000)]
    lo, hi = np.percentile(sample, [1, 99])
    if lo < -1500:
        warnings.warn(
            f"{source}: 1st percentile {lo:.0f} is below -1500 HU after hu_mode={hu_mode!r}; "
            "was the rescale applied twice (use hu_mode='already_hu' for CT-RATE *_fixed volumes)?",
            HURangeWarning,
            stacklevel=3,
        )
    elif lo >= 0 and hi > 1000:
        warnings.warn(
            f"{source}: values {lo:.0f}..{hi:.0f} look like raw stored values, not HU (no air below 0); "
            "use hu_mode='apply_rescale' with the scanner's slope/intercept",
            HURangeWarning,
            stacklevel=3,
        )


def read_nifti(
    path: str | Path,
    hu_mode: str = "already_hu",
    slope: float | None = None,
    intercept: float | None = None,
) -> CTVolume:
    """Read a 3D NIfTI CT volume.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        hu_mode: ``"already_hu"`` (header scaling applied, values are HU) or ``"apply_rescale"`` (raw stored
            values · ``slope`` + ``intercept``; both required).
        slope: RescaleSlope for ``apply_rescale`` (CT-RATE metadata CSV).
        intercept: RescaleIntercept for ``apply_rescale``.

    Returns:
        The volume in HU with the file's affine (sform, else qform), checked for shear and NaNs.
    """
    import nibabel as nib

    path = Path(path)
    if hu_mode not in HU_MODES:
        raise ValueError(f"hu_mode must be one of {HU_MODES}, got {hu_mode!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for corrupt headers
        raise CorruptRecordError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if len(img.shape) != 3:
        raise BadInputError(f"{path}: expected a 3D volume, got shape {img.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, str(path))
    if hu_mode == "already_hu":
        if slope is not None or intercept is not None:
            raise ValueError(f"{path}: slope/intercept given with hu_mode='already_hu'; use 'apply_rescale'")
        array = np.asarray(img.get_fdata(dtype=np.float32))
    else:
        if slope is None or intercept is None:
            raise ValueError(f"{path}: hu_mode='apply_rescale' needs slope and intercept (e.g. CT-RATE metadata)")
        raw = np.asarray(img.dataobj.get_unscaled(), dtype=np.float32)
        array = raw * np.float32(slope) + np.float32(intercept)
    _check_voxels(array, str(path))
    _check_hu_range(array, str(path), hu_mode)
    return CTVolume(array.astype(np.float32, copy=False), affine, str(path), {"format": "nifti", "hu_mode": hu_mode})


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_dicom_series(
    path: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    strict_modality: bool = False,
    gap_tolerance: float = 0.05,
    orientation_tolerance: float = 1e-4,
) -> CTVolume:
    """Assemble one DICOM series (a folder, a list of files, or one single-slice file) into a volume in HU.

    Args:
        path: folder (searched recursively), file list, or a single file.
        series_uid: SeriesInstanceUID to read when the folder holds several; ``None`` = exactly one must exist.
        strict_modality: a non-CT Modality raises instead of warning.
        gap_tolerance: allowed relative deviation of each slice step from the median step.
        orientation_tolerance: allowed difference between slices' ImageOrientationPatient.

    Returns:
        ``CTVolume`` with ``array [cols, rows, slices]`` in HU and a RAS affine built from the positions.
    """
    import pydicom

    if isinstance(path, (str, Path)):
        root = Path(path)
        files = _dicom_files(root) if root.is_dir() else [root]
        where = str(root)
    else:
        files = [Path(p) for p in path]
        where = str(files[0].parent) if files else "<empty list>"
    if not files:
        raise SeriesError(f"{where}: no files")
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:
            raise CorruptRecordError(f"{f}: not a DICOM file ({exc})") from exc
        headers.append((f, ds))
    uids = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers})
    if series_uid is not None:
        headers = [(f, ds) for f, ds in headers if str(getattr(ds, "SeriesInstanceUID", "")) == series_uid]
        if not headers:
            raise SeriesError(f"{where}: no slice of series {series_uid} (found {len(uids)} series)")
    elif len(uids) > 1:
        raise SeriesError(f"{where}: mixed series ({len(uids)} SeriesInstanceUIDs); pass series_uid= to pick one")
    modality = str(getattr(headers[0][1], "Modality", ""))
    if modality != "CT":
        msg = f"{where}: Modality is {modality or 'missing'!r}, not 'CT'"
        if strict_modality:
            raise BadInputError(msg)
        warnings.warn(msg + "; reading it as CT anyway", ModalityWarning, stacklevel=2)
    for f, ds in headers:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise SeriesError(f"{f}: {tag} is missing; cannot place the slice in space")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise SeriesError(f"{f}: multi-frame (enhanced) DICOM is not supported by this reader")
    iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in headers])
    if np.abs(iop - iop[0]).max() > orientation_tolerance:
        raise SeriesError(f"{where}: mixed ImageOrientationPatient within one series (localizer or reformat mixed in?)")
    row_dir, col_dir = iop[0, :3], iop[0, 3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    headers = [headers[i] for i in order]
    pos, proj = pos[order], proj[order]
    spacing_rc = [float(v) for v in headers[0][1].PixelSpacing]
    shape_rc = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
    if len(shape_rc) > 1:
        raise SeriesError(f"{where}: slices have different sizes {sorted(shape_rc)}")
    n = len(headers)
    if n > 1:
        steps = np.diff(proj)
        if (steps < 1e-3).any():
            k = int(np.argmin(steps))
            raise SeriesError(
                f"{where}: duplicate slice position {proj[k]:.3f} mm along the normal ({headers[k][0].name} and "
                f"{headers[k + 1][0].name})"
            )
        step = float(np.median(steps))
        bad = np.abs(steps - step) > gap_tolerance * step
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            missing = round(steps[k] / step) - 1
            raise SeriesError(
                f"{where}: irregular slice spacing: step {steps[k]:.3f} mm after {proj[k]:.3f} mm vs median "
                f"{step:.3f} mm" + (f" ({missing} missing slice(s)?)" if missing >= 1 else "")
            )
        offset = (pos[-1] - pos[0]) / (n - 1)
        if np.linalg.norm(np.cross(offset / np.linalg.norm(offset), normal)) > 1e-3:
            raise SeriesError(f"{where}: slice positions are not along the slice normal (gantry tilt / sheared stack)")
        k_vec = normal * step
    else:
        thickness = float(getattr(headers[0][1], "SliceThickness", 0) or 0) or 1.0
        k_vec = normal * thickness
    slices = []
    for f, _ in headers:
        ds = pydicom.dcmread(str(f))
        px = ds.pixel_array.astype(np.float32)
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append(px * slope + intercept)  # modality LUT, exactly once per slice
    # pixel_array is [rows, cols]: rows step along col_dir (PixelSpacing[0]), cols along row_dir (PixelSpacing[1]).
    array = np.stack([s.T for s in slices], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing_rc[1]
    lps[:3, 1] = col_dir * spacing_rc[0]
    lps[:3, 2] = k_vec
    lps[:3, 3] = pos[0]
    affine = LPS_TO_RAS @ lps
    check_affine(affine, where)
    _check_voxels(array, where)
    meta = {"format": "dicom", "modality": modality, "n_slices": n, "series_uid": uids[0] if series_uid is None
            else series_uid, "slice_thickness_header": float(getattr(headers[0][1], "SliceThickness", 0) or 0)}  # fmt: skip
    return CTVolume(array, affine, where, meta)


def read_ct(path: str | Path, hu_mode: str = "already_hu", **kwargs: Any) -> CTVolume:
    """Read a NIfTI file or a DICOM series/file by looking at the path."""
    p = Path(path)
    if p.name.endswith((".nii", ".nii.gz")):
        return read_nifti(p, hu_mode=hu_mode, **kwargs)
    if hu_mode != "already_hu":
        raise ValueError(f"{p}: DICOM always applies its own RescaleSlope/Intercept; hu_mode must be 'already_hu'")
    return read_dicom_series(p, **kwargs)


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    dtype: Any = np.int16,
    hu_range: tuple[float, float] | None = (-1024, 3071),
) -> Path:
    """Write ``array [I, J, K]`` (HU) as NIfTI with ``affine`` in both sform and qform (code 1, scanner)."""
    import nibabel as nib

    check_affine(affine, str(path))
    a = np.asarray(array, dtype=np.float32)
    if hu_range is not None:
        a = np.clip(a, *hu_range)
    if np.issubdtype(np.dtype(dtype), np.integer):
        a = np.rint(a)
    img = nib.Nifti1Image(a.astype(dtype), np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
