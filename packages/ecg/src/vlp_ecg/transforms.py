"""Composable, seeded, MONAI-style dict transforms for ECG samples.

A *sample* is a dict with at least ``"ecg"``: ``(C, T)`` float32 numpy array in mV (or normalised units) and
``"fs"``: sampling rate in Hz. Transforms may add ``"ecg_mask"`` (``(T,)`` bool, True = real samples) and read or
update ``"lead_mask"`` (``(C,)`` bool). Random transforms draw from the ``rng`` passed to ``__call__`` so a whole
pipeline is deterministic given one seed (see :class:`Compose` and :func:`sample_rng`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from scipy import signal as sps

__all__ = [
    "AmplitudeScale",
    "BandPass",
    "BaselineWander",
    "Compose",
    "CropPad",
    "GaussianNoise",
    "Normalize",
    "Notch",
    "RandomCrop",
    "RandomLeadMask",
    "Resample",
    "Transform",
    "build_transforms",
    "sample_rng",
]

Sample = dict[str, Any]


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, *keys)`` (e.g. epoch and index): same inputs, same draws."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


class Transform(ABC):
    """Base class. Subclasses implement ``__call__(sample, rng) -> sample`` and must not mutate the input arrays."""

    random: bool = False

    @abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Return the transformed sample (``rng`` drives random transforms; deterministic ones ignore it)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order.

    Args:
        transforms: the transforms.
        seed: seed of the internal generator used when ``__call__`` gets no ``rng``.
    """

    def __init__(self, transforms: Sequence[Transform], seed: int = 0) -> None:
        self.transforms = list(transforms)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else self._rng
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


def _out(sample: Sample, **updates: Any) -> Sample:
    out = dict(sample)
    out.update(updates)
    return out


class Resample(Transform):
    """Polyphase resampling (``scipy.signal.resample_poly``) to ``target_fs``.

    Args:
        target_fs: output rate in Hz. Rates are converted to an exact rational up/down ratio (500 -> 100 is 1/5).
    """

    def __init__(self, target_fs: float) -> None:
        self.target_fs = float(target_fs)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        fs = float(sample["fs"])
        if math.isclose(fs, self.target_fs):
            return sample
        ratio = Fraction(self.target_fs / fs).limit_denominator(1000)
        x = sps.resample_poly(sample["ecg"], ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)
        upd: dict[str, Any] = {"ecg": x, "fs": self.target_fs}
        if "ecg_mask" in sample:
            idx = np.minimum((np.arange(x.shape[-1]) * fs / self.target_fs).astype(int), len(sample["ecg_mask"]) - 1)
            upd["ecg_mask"] = np.asarray(sample["ecg_mask"])[idx]
        if "rpeaks" in sample:
            upd["rpeaks"] = np.round(np.asarray(sample["rpeaks"]) * self.target_fs / fs).astype(np.int64)
        return _out(sample, **upd)


class BandPass(Transform):
    """Zero-phase Butterworth band-pass (``sosfiltfilt``).

    Args:
        low: high-pass corner in Hz (``None`` = low-pass only).
        high: low-pass corner in Hz (``None`` = high-pass only); must be below Nyquist.
        order: filter order.
    """

    def __init__(self, low: float | None = 0.5, high: float | None = 40.0, order: int = 3) -> None:
        if low is None and high is None:
            raise ValueError("BandPass needs low and/or high")
        self.low, self.high, self.order = low, high, order

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        fs = float(sample["fs"])
        nyq = fs / 2
        high = self.high if self.high is not None and self.high < nyq * 0.99 else None
        if self.low is not None and high is not None:
            sos = sps.butter(self.order, [self.low, high], btype="bandpass", fs=fs, output="sos")
        elif self.low is not None:
            sos = sps.butter(self.order, self.low, btype="highpass", fs=fs, output="sos")
        elif high is not None:
            sos = sps.butter(self.order, high, btype="lowpass", fs=fs, output="sos")
        else:
            return sample
        x = sps.sosfiltfilt(sos, sample["ecg"], axis=-1).astype(np.float32)
        return _out(sample, ecg=x)


class Notch(Transform):
    """Zero-phase IIR notch at mains frequency.

    Args:
        freq: notch frequency (50 or 60 Hz). Skipped when at or above Nyquist.
        quality: quality factor.
    """

    def __init__(self, freq: float = 50.0, quality: float = 30.0) -> None:
        self.freq, self.quality = freq, quality

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        fs = float(sample["fs"])
        if self.freq >= fs / 2:
            return sample
        b, a = sps.iirnotch(self.freq, self.quality, fs=fs)
        return _out(sample, ecg=sps.filtfilt(b, a, sample["ecg"], axis=-1).astype(np.float32))


class Normalize(Transform):
    """Normalise amplitudes.

    Args:
        mode: ``"zscore"`` (per lead, default), ``"robust"`` (per lead, median/IQR), ``"zscore_global"``,
            ``"minmax"`` (per lead to [0, 1]) or ``"minmax_global"`` (MELP/MERL convention).
        eps: added to the scale.

    Statistics use only real samples (``ecg_mask``) and valid leads (``lead_mask``); masked leads stay zero.
    """

    MODES = ("zscore", "robust", "zscore_global", "minmax", "minmax_global")

    def __init__(self, mode: str = "zscore", eps: float = 1e-6) -> None:
        if mode not in self.MODES:
            raise ValueError(f"Normalize mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.eps = mode, eps

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        x = np.asarray(sample["ecg"], dtype=np.float32)
        tmask = np.asarray(sample.get("ecg_mask", np.ones(x.shape[-1], bool)), bool)
        lmask = np.asarray(sample.get("lead_mask", np.ones(x.shape[0], bool)), bool)
        v = x[:, tmask]
        if self.mode == "zscore":
            loc, scale = v.mean(1, keepdims=True), v.std(1, keepdims=True)
        elif self.mode == "robust":
            q25, q50, q75 = np.percentile(v, [25, 50, 75], axis=1, keepdims=True)
            loc, scale = q50, (q75 - q25)
        elif self.mode == "zscore_global":
            loc, scale = v[lmask].mean(), v[lmask].std()
        elif self.mode == "minmax":
            loc, scale = v.min(1, keepdims=True), v.max(1, keepdims=True) - v.min(1, keepdims=True)
        else:
            loc, scale = v[lmask].min(), v[lmask].max() - v[lmask].min()
        y = (x - loc) / (scale + self.eps)
        y[~lmask] = 0.0
        y[:, ~tmask] = 0.0
        return _out(sample, ecg=y.astype(np.float32))


class CropPad(Transform):
    """Crop or pad to a fixed duration, recording real samples in ``ecg_mask``.

    Args:
        duration: seconds.
        mode: where to crop when too long: ``"start"``, ``"center"`` or ``"random"`` (uses ``rng``).
        pad_value: value for padded samples (padding is always flagged in ``ecg_mask``).
    """

    def __init__(self, duration: float, mode: str = "start", pad_value: float = 0.0) -> None:
        if mode not in ("start", "center", "random"):
            raise ValueError(f"CropPad mode must be start/center/random, got {mode!r}")
        self.duration, self.mode, self.pad_value = duration, mode, pad_value
        self.random = mode == "random"

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        x = np.asarray(sample["ecg"])
        n = int(round(self.duration * float(sample["fs"])))
        t = x.shape[-1]
        tmask = np.asarray(sample.get("ecg_mask", np.ones(t, bool)), bool)
        if t >= n:
            if self.mode == "start":
                s = 0
            elif self.mode == "center":
                s = (t - n) // 2
            else:
                s = int((rng or np.random.default_rng()).integers(0, t - n + 1))
            upd: dict[str, Any] = {"ecg": x[:, s : s + n], "ecg_mask": tmask[s : s + n]}
        else:
            s = 0
            pad = np.full((x.shape[0], n - t), self.pad_value, dtype=x.dtype)
            upd = {"ecg": np.concatenate([x, pad], 1), "ecg_mask": np.concatenate([tmask, np.zeros(n - t, bool)])}
        if "rpeaks" in sample:
            r = np.asarray(sample["rpeaks"]) - s
            upd["rpeaks"] = r[(r >= 0) & (r < min(n, t - s))]
        return _out(sample, **upd)


class RandomCrop(CropPad):
    """Random crop (padding with a mask when the record is shorter). Args: duration (s)."""

    def __init__(self, duration: float) -> None:
        super().__init__(duration, mode="random")


class RandomLeadMask(Transform):
    """Zero each valid lead independently with probability ``p`` (at least one lead is kept).

    Args:
        p: per-lead drop probability.
    """

    random = True

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng or np.random.default_rng()
        x = np.array(sample["ecg"], dtype=np.float32, copy=True)
        drop = rng.random(x.shape[0]) < self.p
        if drop.all():
            drop[rng.integers(0, x.shape[0])] = False
        x[drop] = 0.0
        lmask = np.asarray(sample.get("lead_mask", np.ones(x.shape[0], bool)), bool) & ~drop
        return _out(sample, ecg=x, lead_mask=lmask)


class GaussianNoise(Transform):
    """Add white noise. Args: std: standard deviation (signal units); p: probability of applying."""

    random = True

    def __init__(self, std: float = 0.05, p: float = 1.0) -> None:
        self.std, self.p = std, p

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng or np.random.default_rng()
        if rng.random() >= self.p:
            return sample
        x = np.asarray(sample["ecg"], dtype=np.float32)
        return _out(sample, ecg=(x + rng.normal(0, self.std, x.shape)).astype(np.float32))


class BaselineWander(Transform):
    """Add a low-frequency sinusoidal baseline shared by all leads (with per-lead gains).

    Args:
        amplitude: maximum amplitude (signal units).
        freq: (low, high) frequency range in Hz.
        p: probability of applying.
    """

    random = True

    def __init__(self, amplitude: float = 0.1, freq: tuple[float, float] = (0.05, 0.5), p: float = 1.0) -> None:
        self.amplitude, self.freq, self.p = amplitude, tuple(freq), p

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng or np.random.default_rng()
        if rng.random() >= self.p:
            return sample
        x = np.asarray(sample["ecg"], dtype=np.float32)
        t = np.arange(x.shape[-1]) / float(sample["fs"])
        f = rng.uniform(*self.freq)
        wave = self.amplitude * rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        gains = rng.uniform(0.5, 1.0, (x.shape[0], 1))
        return _out(sample, ecg=(x + gains * wave[None]).astype(np.float32))


class AmplitudeScale(Transform):
    """Multiply each lead by a random factor. Args: scale: (low, high) range; p: probability of applying."""

    random = True

    def __init__(self, scale: tuple[float, float] = (0.8, 1.2), p: float = 1.0) -> None:
        self.scale, self.p = tuple(scale), p

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng or np.random.default_rng()
        if rng.random() >= self.p:
            return sample
        x = np.asarray(sample["ecg"], dtype=np.float32)
        return _out(sample, ecg=(x * rng.uniform(*self.scale, (x.shape[0], 1))).astype(np.float32))


_BUILDERS = {
    "resample": Resample,
    "bandpass": BandPass,
    "notch": Notch,
    "normalize": Normalize,
    "crop_pad": CropPad,
    "random_crop": RandomCrop,
    "lead_mask": RandomLeadMask,
    "noise": GaussianNoise,
    "baseline_wander": BaselineWander,
    "amplitude_scale": AmplitudeScale,
}


def build_transforms(spec: Sequence[dict[str, Any]] | None, seed: int = 0) -> Compose:
    """Build a :class:`Compose` from a YAML-friendly list such as ``[{"name": "resample", "target_fs": 100}]``."""
    out = []
    for item in spec or []:
        item = dict(item)
        name = item.pop("name")
        if name not in _BUILDERS:
            raise KeyError(f"unknown ECG transform {name!r}; available: {sorted(_BUILDERS)}")
        out.append(_BUILDERS[name](**item))
    return Compose(out, seed=seed)
