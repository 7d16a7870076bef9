"""Reading 2D medical images: DICOM (pydicom) and PNG/JPEG (Pillow) to float32 ``[H, W]`` in ``[0, 1]`` + metadata.

DICOM pipeline (PS3.3 C.11 order), all explicit:

1. decode the stored values (compressed transfer syntaxes through pydicom's pixel handlers; JPEG Lossless,
   JPEG-LS and JPEG 2000 need ``python-gdcm``: ``pip install "vlp-medical[gdcm]"``);
2. mask unused high bits of unsigned data to ``BitsStored`` (overlay bits in the high bits are not pixels);
3. Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence);
4. VOI transform, chosen by ``voi`` (default ``"auto"``: the file's VOI LUT Sequence, else its first
   ``WindowCenter``/``WindowWidth``, else the min-max range of the modality values), mapped to ``[0, 1]``;
5. ``MONOCHROME1`` (high value = dark) inverted to ``MONOCHROME2`` **after** the VOI transform (pydicom never
   inverts for you).

Multi-frame files are rejected for 2D use. Colour DICOMs are rejected (radiographs are grey). Metadata never
contains patient identifiers (no names, ids, dates of birth); errors name the file, not the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlp_core.data import CorruptRecordError, UnsupportedFormatError

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MissingDecoderError",
    "VOI_MODES",
    "read_dicom",
    "read_image",
    "read_raster",
    "window_to_unit",
    "write_dicom",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOI_MODES = ("auto", "voi_lut", "window", "minmax", "percentile", "none")
GDCM_HINT = 'install the decoder with `pip install "vlp-medical[gdcm]"` (python-gdcm, Apache-2.0)'

# Metadata copied from the header; deliberately no patient/study identifiers or dates.
_META_TAGS = ("Modality", "ViewPosition", "BodyPartExamined", "Rows", "Columns", "BitsStored", "BitsAllocated",
              "PixelRepresentation", "PhotometricInterpretation")  # fmt: skip


class MissingDecoderError(UnsupportedFormatError):
    """The file's transfer syntax needs a pixel-data handler that is not installed (the message names the extra)."""


@dataclass(frozen=True)
class _Window:
    center: float
    width: float
    function: str = "LINEAR"


def window_to_unit(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) with output range ``[0, 1]``.

    Args:
        x: modality values (after rescale).
        center: window centre.
        width: window width (``>= 1`` for LINEAR, ``> 0`` otherwise).
        function: ``"LINEAR"``, ``"LINEAR_EXACT"`` or ``"SIGMOID"``.

    Returns:
        float32 array of ``x``'s shape in ``[0, 1]``.
    """
    x = x.astype(np.float64, copy=False)
    function = function.upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        y = (x - (center - 0.5)) / (width - 1) + 0.5 if width > 1 else (x > center - 0.5).astype(np.float64)
        y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, np.where(x > center - 0.5 + (width - 1) / 2, 1.0, y))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        y = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        raise ValueError(f"unknown VOI LUT function {function!r}; expected LINEAR, LINEAR_EXACT or SIGMOID")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _first(value: Any) -> float:
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)


def _decode(ds: Any, path: Path, decoding_plugin: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        if decoding_plugin:
            return pixel_array(ds, decoding_plugin=decoding_plugin)
        return pixel_array(ds)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        msg = str(exc)
        compressed = ts is not None and getattr(ts, "is_compressed", False)
        if compressed and ("plugin" in msg.lower() or "package" in msg.lower() or "decod" in msg.lower()):
            name = getattr(ts, "name", str(ts))
            raise MissingDecoderError(
                f"{path}: no installed pixel-data handler can decode transfer syntax {name!r}; {GDCM_HINT}. "
                f"(pydicom said: {msg.splitlines()[0]})"
            ) from exc
        raise CorruptRecordError(f"{path}: cannot decode PixelData ({type(exc).__name__}: {msg})") from exc


def read_dicom(
    path: str | Path,
    voi: str = "auto",
    window: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    voi_index: int = 0,
    decoding_plugin: str = "",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-frame grey DICOM image.

    Args:
        path: ``.dcm`` file.
        voi: VOI transform to ``[0, 1]``: ``"auto"`` (default: VOI LUT Sequence, else the first window in the
            header, else ``"minmax"``), ``"voi_lut"`` (require a VOI LUT Sequence), ``"window"`` (``window`` if
            given, else the header's first window; error if neither), ``"minmax"`` (full range of the modality
            values in this image), ``"percentile"`` (``percentiles`` of the modality values, hi-ml style),
            ``"none"`` (full range of the stored bits, mapped through the modality LUT).
        window: explicit ``(center, width)`` for ``voi="window"``, in modality units (e.g. HU).
        percentiles: low/high percentiles for ``voi="percentile"``.
        voi_index: which window / VOI LUT to use when the header has several.
        decoding_plugin: force one pydicom decoding plug-in (``"gdcm"``, ``"pillow"``, ...); ``""`` = any available.

    Returns:
        ``image`` float32 ``[H, W]`` in ``[0, 1]`` (MONOCHROME2: high = bright) and metadata (``modality``,
        ``view_position``, ``pixel_spacing`` (mm, row/col), ``transfer_syntax``, ``voi`` (what was applied),
        ``inverted``, bit depths...). No patient identifiers.

    Raises:
        CorruptRecordError: no PixelData, missing PhotometricInterpretation, undecodable data.
        UnsupportedFormatError: multi-frame or colour data, unknown ``voi``.
        MissingDecoderError: compressed transfer syntax without an installed handler (names the extra).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi

    path = Path(path)
    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise CorruptRecordError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise CorruptRecordError(f"{path}: DICOM has no PixelData element (e.g. a structured report or a KOS)")
    photometric = ds.get("PhotometricInterpretation")
    if photometric is None:
        raise CorruptRecordError(
            f"{path}: PhotometricInterpretation (0028,0004) is missing, so whether to invert (MONOCHROME1) is unknown"
        )
    photometric = str(photometric).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedFormatError(
            f"{path}: PhotometricInterpretation {photometric} is not a grey radiograph (MONOCHROME1/2 expected)"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedFormatError(f"{path}: multi-frame DICOM ({frames} frames, NumberOfFrames) is not a 2D image")
    raw = _decode(ds, path, decoding_plugin)
    if raw.ndim != 2:
        raise UnsupportedFormatError(f"{path}: decoded pixel array has shape {raw.shape}, expected [rows, cols]")

    bits_stored = int(ds.get("BitsStored", raw.dtype.itemsize * 8))
    if raw.dtype.kind == "u" and bits_stored < raw.dtype.itemsize * 8:
        raw = raw & np.array((1 << bits_stored) - 1, dtype=raw.dtype)  # drop overlay/garbage high bits
    values = apply_modality_lut(raw, ds).astype(np.float64, copy=False)

    has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > voi_index
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    mode = voi
    if mode == "auto":
        mode = "voi_lut" if has_lut else ("window" if has_window or window is not None else "minmax")
    applied: dict[str, Any] = {"mode": mode}
    if mode == "voi_lut":
        if not has_lut:
            raise CorruptRecordError(f"{path}: voi='voi_lut' but the file has no VOILUTSequence item {voi_index}")
        item = ds.VOILUTSequence[voi_index]
        out_bits = int(item.LUTDescriptor[2])
        # A VOI LUT is indexed by integer modality values (PS3.3 C.11.2.1.1).
        lut_in = np.rint(values).astype(np.int64)
        out = apply_voi(lut_in, ds, index=voi_index).astype(np.float64) / float((1 << out_bits) - 1)
        image = np.clip(out, 0.0, 1.0).astype(np.float32)
    elif mode == "window":
        if window is not None:
            win = _Window(float(window[0]), float(window[1]))
        elif has_window:
            centers, widths = ds.WindowCenter, ds.WindowWidth
            pick = lambda v: float(v[voi_index]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
            func = str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR"
            win = _Window(pick(centers), pick(widths), func)
        else:
            raise CorruptRecordError(f"{path}: voi='window' but no window given and WindowCenter/WindowWidth absent")
        image = window_to_unit(values, win.center, win.width, win.function)
        applied.update(center=win.center, width=win.width, function=win.function)
    elif mode in ("minmax", "percentile", "none"):
        if mode == "minmax":
            lo, hi = float(values.min()), float(values.max())
        elif mode == "percentile":
            lo, hi = (float(v) for v in np.percentile(values, percentiles))
        else:
            signed = int(ds.get("PixelRepresentation", 0)) == 1
            smin, smax = (
                (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
            )
            ends = apply_modality_lut(np.array([smin, smax], dtype=np.int64 if signed else np.uint64), ds)
            lo, hi = float(np.min(ends)), float(np.max(ends))
        image = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
        applied.update(low=lo, high=hi)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        image = 1.0 - image
    meta: dict[str, Any] = {"format": "dicom", "source": path.name}
    for tag in _META_TAGS:
        if tag in ds:
            value = ds.get(tag)
            meta[_snake(tag)] = value if isinstance(value, (int, float)) else str(value)
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    meta["pixel_spacing"] = tuple(float(v) for v in spacing) if spacing else None
    meta["transfer_syntax"] = str(getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "unknown"))
    meta.update(voi=applied, inverted=inverted, shape=tuple(image.shape))
    return image, meta


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def read_raster(
    path: str | Path, mode: str = "L", sixteen_bit: str = "full_range"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read PNG/JPEG/TIFF with Pillow.

    Args:
        path: image file.
        mode: ``"L"`` (grey ``[H, W]``; an RGB file is accepted only when its three channels are identical) or
            ``"RGB"`` (``[H, W, 3]``; grey files are repeated to three channels, recorded in the metadata).
        sixteen_bit: what a 16-bit grey file means: ``"full_range"`` (divide by 65535, the PNG definition),
            ``"minmax"`` (stretch this image's range), or ``"error"`` (refuse, e.g. when a pipeline expects 8-bit).

    Returns:
        float32 image in ``[0, 1]`` and metadata (``bit_depth``, ``mode``, ``shape``).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if sixteen_bit not in ("full_range", "minmax", "error"):
        raise ValueError(f"sixteen_bit must be 'full_range', 'minmax' or 'error', got {sixteen_bit!r}")
    try:
        with Image.open(path) as im:
            im.load()
            pil_mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise CorruptRecordError(f"{path}: not a readable image ({exc})") from exc
    meta: dict[str, Any] = {"format": path.suffix.lower().lstrip("."), "source": path.name, "pil_mode": pil_mode}
    if pil_mode in ("I;16", "I;16B", "I;16L", "I"):
        if sixteen_bit == "error":
            raise UnsupportedFormatError(f"{path}: 16-bit image (mode {pil_mode}) refused (sixteen_bit='error')")
        arr = arr.astype(np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise UnsupportedFormatError(f"{path}: 32-bit integer image with values outside [0, 65535]")
        if sixteen_bit == "full_range":
            image = arr / 65535.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            image = (arr - lo) / max(hi - lo, 1e-12)
        meta["bit_depth"] = 16
        meta["sixteen_bit"] = sixteen_bit
    elif pil_mode in ("L", "RGB", "RGBA", "LA", "P"):
        if pil_mode == "P":
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        if pil_mode in ("RGBA", "LA"):
            arr = arr[..., :-1]  # alpha is not image content
            if pil_mode == "LA":
                arr = arr[..., 0]
        image = arr.astype(np.float64) / 255.0
        meta["bit_depth"] = 8
    else:
        raise UnsupportedFormatError(f"{path}: Pillow mode {pil_mode} is not supported")
    if mode == "L" and image.ndim == 3:
        if not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])):
            raise UnsupportedFormatError(f"{path}: colour image where a grey radiograph (mode 'L') was expected")
        image = image[..., 0]
    elif mode == "RGB" and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
        meta["grey_to_rgb"] = True
    image = image.astype(np.float32)
    meta["shape"] = tuple(image.shape)
    return image, meta


def read_image(path: str | Path, mode: str = "L", **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Read any supported 2D image by suffix (DICOM via :func:`read_dicom`, others via :func:`read_raster`).

    Args:
        path: file path.
        mode: ``"L"`` or ``"RGB"`` (DICOM is grey only; ``"RGB"`` repeats it to three channels).
        **kwargs: forwarded to the reader (``voi``, ``window``, ``sixteen_bit``...).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        image, meta = read_dicom(path, **kwargs)
        if mode == "RGB":
            image = np.repeat(image[..., None], 3, axis=-1)
        return image, meta
    if suffix in IMAGE_SUFFIXES:
        return read_raster(path, mode=mode, **kwargs)
    raise UnsupportedFormatError(
        f"{path}: unknown image suffix {suffix!r}; supported {DICOM_SUFFIXES + IMAGE_SUFFIXES}"
    )


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    view_position: str | None = "PA",
    modality: str = "DX",
    pixel_spacing: tuple[float, float] | None = (0.143, 0.143),
    study_uid: str | None = None,
    uid_seed: str | None = None,
) -> Path:
    """Write an unsigned single-frame grey image as a real Explicit-VR-Little-Endian DX DICOM file.

    Used by the phantom generator and the tests (no patient identifiers are written beyond an anonymous
    placeholder name). ``pixels`` must be integers within ``BitsStored``.

    Args:
        path: output file.
        pixels: ``[H, W]`` unsigned integer array.
        photometric: ``"MONOCHROME1"`` (high = dark) or ``"MONOCHROME2"``.
        bits_stored: BitsStored (<= 16; stored in 16-bit words).
        window: ``(WindowCenter, WindowWidth)`` to write, or ``None``.
        rescale: ``(RescaleSlope, RescaleIntercept)`` to write, or ``None``.
        view_position: ViewPosition (``"PA"``, ``"AP"``, ``"LL"``...).
        modality: Modality.
        pixel_spacing: ImagerPixelSpacing in mm.
        study_uid: StudyInstanceUID (generated when ``None``).
        uid_seed: make generated UIDs deterministic (``generate_uid(entropy_srcs=[uid_seed])``).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise ValueError(f"pixels must be a 2D integer array, got {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= (1 << bits_stored):
        raise ValueError(f"pixel values must lie in [0, 2**{bits_stored}), got [{arr.min()}, {arr.max()}]")

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, tag]) if uid_seed is not None else generate_uid()

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName, ds.PatientID = "ANONYMOUS", "ANON"
    ds.Modality = modality
    if view_position:
        ds.ViewPosition = view_position
    ds.set_pixel_data(arr.astype(np.uint16), photometric, 16)
    ds.BitsStored, ds.HighBit = int(bits_stored), int(bits_stored) - 1
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
    if pixel_spacing is not None:
        ds.ImagerPixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
