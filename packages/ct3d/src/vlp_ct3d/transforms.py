"""MONAI dictionary-transform presets for CT: load (our readers) → RAS → target spacing → HU window with clipping →
optional foreground crop → pad/crop to size. Never an anisotropic resize: the physical voxel size after the
pipeline is exactly the preset's spacing, and the field of view is cut or padded, not stretched.

Caching: :func:`cached_dataset` wraps MONAI's ``PersistentDataset`` so that cache hits keep the affine. MONAI 1.6
returns plain tensors without metadata from its cache unless ``track_meta=True`` (which then needs unpickling,
``weights_only=False``); we end every pipeline with :class:`ToSafeTensord`, which stores the affine and spacing as
plain tensors beside the image, so the cache stays loadable with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    MapTransform,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from vlp_ct3d.io import HU_MODES, read_ct

__all__ = ["PRESETS", "CTPreset", "LoadCTd", "ToSafeTensord", "build_transforms", "cached_dataset", "window_to_hu"]


@dataclass(frozen=True)
class CTPreset:
    """A named preprocessing recipe.

    Attributes:
        spacing: target voxel size (mm) along R, A, S after reorientation.
        size: output grid (voxels) along R, A, S; the volume is padded/cropped (centred), never resized.
        hu_window: HU range mapped to ``out_range`` with clipping.
        out_range: ``(0, 1)`` or ``(-1, 1)``.
        foreground_crop: crop to the body (voxels above ``foreground_hu``) before pad/crop.
        foreground_hu: HU threshold of the body for the foreground crop.
    """

    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    out_range: tuple[float, float] = (0.0, 1.0)
    foreground_crop: bool = False
    foreground_hu: float = -500.0
    notes: str = field(default="", compare=False)


PRESETS: dict[str, CTPreset] = {
    "ctclip": CTPreset((0.75, 0.75, 1.5), (480, 480, 240), (-1000, 1000), (-1.0, 1.0), notes="CT-CLIP geometry"),
    "text2ct": CTPreset((0.75, 0.75, 1.5), (512, 512, 128), (-1000, 1000), (0.0, 1.0), notes="Text2CT paper"),
    "merlin": CTPreset((1.5, 1.5, 3.0), (224, 224, 160), (-1000, 1000), (0.0, 1.0), notes="Merlin"),
    "demo": CTPreset((10.0, 10.0, 10.0), (32, 32, 32), (-1000, 1000), (0.0, 1.0), notes="CPU demo phantoms"),
}


def window_to_hu(x: Any, hu_window: tuple[float, float], out_range: tuple[float, float] = (0.0, 1.0)) -> Any:
    """Invert the HU window: values in ``out_range`` → HU."""
    (a, b), (lo, hi) = hu_window, out_range
    return (x - lo) / (hi - lo) * (b - a) + a


class LoadCTd(MapTransform):
    """Read ``d[key]`` (a path) with :func:`vlp_ct3d.io.read_ct` into a ``MetaTensor [1, I, J, K]`` in HU.

    Args:
        keys: path keys.
        hu_mode: ``"already_hu"`` or ``"apply_rescale"``; with ``apply_rescale`` the sample must carry
            ``slope_key`` and ``intercept_key`` (CT-RATE v1 metadata).
        slope_key: sample key of the RescaleSlope.
        intercept_key: sample key of the RescaleIntercept.
    """

    def __init__(
        self,
        keys: Sequence[Hashable] | Hashable = "image",
        hu_mode: str = "already_hu",
        slope_key: str = "slope",
        intercept_key: str = "intercept",
    ) -> None:
        super().__init__(keys)
        if hu_mode not in HU_MODES:
            raise ValueError(f"hu_mode must be one of {HU_MODES}, got {hu_mode!r}")
        self.hu_mode, self.slope_key, self.intercept_key = hu_mode, slope_key, intercept_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            kwargs: dict[str, Any] = {}
            if self.hu_mode == "apply_rescale":
                missing = [k for k in (self.slope_key, self.intercept_key) if k not in d]
                if missing:
                    raise KeyError(f"{d[key]}: hu_mode='apply_rescale' needs sample keys {missing}")
                kwargs = {"slope": float(d[self.slope_key]), "intercept": float(d[self.intercept_key])}
            d[key] = read_ct(d[key], hu_mode=self.hu_mode, **kwargs).to_metatensor()
        return d


class ToSafeTensord(MapTransform):
    """MetaTensor → plain float tensor, with ``<key>_affine [4, 4]`` and ``<key>_spacing [3]`` stored beside it."""

    def __init__(self, keys: Sequence[Hashable] | Hashable = "image", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(keys)
        self.dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            affine = torch.as_tensor(getattr(x, "affine", torch.eye(4)), dtype=torch.float64).clone()
            d[f"{key}_affine"] = affine
            d[f"{key}_spacing"] = affine[:3, :3].norm(dim=0).float()
            d[key] = torch.as_tensor(x.as_tensor() if hasattr(x, "as_tensor") else x, dtype=self.dtype).clone()
        return d


def build_transforms(
    preset: str | CTPreset = "demo",
    keys: Sequence[str] = ("image",),
    hu_mode: str = "already_hu",
    load: bool = True,
    safe_output: bool = True,
) -> Compose:
    """The preset's pipeline as a MONAI ``Compose`` of dictionary transforms.

    Args:
        preset: a name in :data:`PRESETS` or a :class:`CTPreset`.
        keys: image keys.
        hu_mode: see :class:`LoadCTd`.
        load: start with :class:`LoadCTd` (False when the samples already hold ``MetaTensor``s in HU).
        safe_output: end with :class:`ToSafeTensord` (plain tensors + affine; needed for a weights-only cache).
    """
    p = PRESETS[preset] if isinstance(preset, str) else preset
    keys = list(keys)
    steps: list[Any] = [LoadCTd(keys, hu_mode=hu_mode)] if load else []
    steps += [
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        # Trilinear resampling to the target spacing changes the grid, not the physical size.
        Spacingd(keys, pixdim=p.spacing, mode="bilinear", padding_mode="border"),
    ]
    if p.foreground_crop:
        thr = p.foreground_hu
        steps.append(CropForegroundd(keys, source_key=keys[0], select_fn=lambda x: x > thr, allow_smaller=True))
    steps.append(
        ScaleIntensityRanged(
            keys, a_min=p.hu_window[0], a_max=p.hu_window[1], b_min=p.out_range[0], b_max=p.out_range[1], clip=True
        )  # fmt: skip
    )
    # Pad with the value of air after windowing (the window's lower end maps to out_range[0]).
    steps.append(ResizeWithPadOrCropd(keys, spatial_size=p.size, mode="constant", value=p.out_range[0]))
    if safe_output:
        steps.append(ToSafeTensord(keys))
    return Compose(steps)


def cached_dataset(data: Sequence[Mapping[str, Any]], transform: Compose, cache_dir: str | Path) -> Any:
    """MONAI ``PersistentDataset`` whose cache hits keep the affine (see module docstring).

    The transform must end with :class:`ToSafeTensord`; the cache is read with ``weights_only=True``.
    """
    from monai.data import PersistentDataset

    if not isinstance(transform.transforms[-1], ToSafeTensord):
        raise ValueError(
            "cached_dataset needs a pipeline ending with ToSafeTensord (build_transforms(safe_output=True))"
        )
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return PersistentDataset(list(data), transform, cache_dir=str(cache_dir), track_meta=False, weights_only=True)


def preset_dict(name: str) -> dict[str, Any]:
    """A preset as plain data (for configs and READMEs)."""
    return asdict(PRESETS[name])


def physical_extent(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Field of view (mm) of a grid."""
    return np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
