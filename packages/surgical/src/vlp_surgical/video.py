"""Video reading behind a small backend interface: PyAV (default), torchcodec (optional), extracted frame folders.

A backend answers two questions: what is in the file (:class:`VideoInfo`), and which frames are shown at given
times (:meth:`VideoBackend.read_at`). The frame *shown* at time ``t`` is the last frame whose presentation time is
``<= t`` (plus half a frame of tolerance for rounding), and its exact presentation time is returned beside it, so
callers never assume a constant frame rate. Sparse requests (gaps longer than ``seek_gap`` seconds) seek to the key
frame before each time instead of decoding everything in between.

torchvision's video reader no longer exists in the torchvision this workspace locks; PyAV ships its own FFmpeg.
:class:`TorchCodecBackend` (PyTorch's decoder) is optional: it needs the ``torchcodec`` extra
(``pip install 'vlp-surgical[torchcodec]'``) *and* a system FFmpeg with shared libraries (major version 4–9), and says
so in a :class:`BackendUnavailableError` when either is missing; ``get_backend("auto")`` uses it only when both are
present and PyAV otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vlp_core.data.errors import CorruptRecordError

__all__ = [
    "BackendUnavailableError",
    "FrameFolder",
    "PyAVBackend",
    "TorchCodecBackend",
    "available_backends",
    "VideoBackend",
    "VideoInfo",
    "VideoReadError",
    "get_backend",
    "read_video",
    "sample_times",
]


class VideoReadError(CorruptRecordError):
    """A video (or frame folder) cannot be read as requested; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata: ``fps`` (average), ``n_frames`` (may be an estimate for some containers),
    ``duration`` (s), ``width``, ``height``."""

    fps: float
    n_frames: int
    duration: float
    width: int
    height: int


class VideoBackend(Protocol):
    """What a video backend provides."""

    def info(self, path: str | Path) -> VideoInfo: ...

    def read_at(self, path: str | Path, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``uint8 [T, H, W, 3]`` shown at ``times`` (s, non-decreasing) and their timestamps ``[T]`` (s)."""
        ...


def sample_times(duration: float, fps: float, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Times ``start, start + 1/fps, ...`` strictly before ``end`` (default: ``duration``)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    end = duration if end is None else min(end, duration)
    n = max(0, math.ceil((end - start) * fps - 1e-9))
    return start + np.arange(n) / fps


class PyAVBackend:
    """Decoding with PyAV (``av``).

    Args:
        seek_gap: seek (instead of decoding through) when the next requested time is more than this many seconds
            ahead of the current position.
        threads: FFmpeg decoding threads (``0`` = FFmpeg's choice).
    """

    def __init__(self, seek_gap: float = 2.0, threads: int = 1) -> None:
        self.seek_gap = seek_gap
        self.threads = threads

    def _open(self, path: str | Path):
        import av

        if not Path(path).is_file():
            raise VideoReadError(f"{path}: no such video file")
        try:
            container = av.open(str(path))
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{path}: not a readable video ({exc})") from exc
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{path}: no video stream")
        return container

    def info(self, path: str | Path) -> VideoInfo:
        container = self._open(path)
        try:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            else:
                duration = 0.0
            n = int(stream.frames) or round(duration * fps)
            return VideoInfo(fps, n, duration, stream.codec_context.width, stream.codec_context.height)
        finally:
            container.close()

    def read_at(self, path: str | Path, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        import av

        times = np.asarray(times, dtype=np.float64)
        if times.size and np.any(np.diff(times) < 0):
            raise ValueError(f"{path}: requested times must be non-decreasing")
        container = self._open(path)
        out: list[np.ndarray] = []
        stamps: list[float] = []
        end = object()
        try:
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            tb = float(stream.time_base)
            fps = float(stream.average_rate or 25)
            tol = 0.5 / fps
            frames = None
            cur = None  # (frame, time, ndarray | None): the last decoded frame shown at or before the target
            nxt = None  # look-ahead frame, or `end`
            for t in times:
                if frames is None or (cur is not None and t - cur[1] > self.seek_gap):
                    # Sparse request: seek to the key frame at or before t, then decode forward from there.
                    container.seek(max(0, int((t - tol) / tb)), stream=stream, backward=True, any_frame=False)
                    frames, cur, nxt = container.decode(stream), None, None
                while True:
                    if nxt is None:
                        try:
                            f = next(frames)
                            nxt = (f, float(f.pts * tb) if f.pts is not None else (cur[1] + 1 / fps if cur else 0.0))
                        except StopIteration:
                            nxt = end
                        except av.error.FFmpegError as exc:
                            raise VideoReadError(f"{path}: decoding failed near {t:.3f} s ({exc})") from exc
                    if nxt is end or nxt[1] > t + tol:
                        break
                    cur, nxt = (nxt[0], nxt[1], None), None
                if cur is None or (nxt is end and t > cur[1] + 1.5 / fps):
                    last = "no frame" if cur is None else f"its last frame is at {cur[1]:.3f} s"
                    raise VideoReadError(
                        f"{path}: requested time {t:.3f} s is past the end of the decodable video ({last}); "
                        "the file may be truncated or corrupt"
                    )
                if cur[2] is None:
                    cur = (cur[0], cur[1], cur[0].to_ndarray(format="rgb24"))
                out.append(cur[2])
                stamps.append(cur[1])
        finally:
            container.close()
        if not out:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
        return np.stack(out), np.asarray(stamps)


class BackendUnavailableError(ImportError):
    """An optional video backend cannot be used here; the message says what to install."""


_TORCHCODEC_HELP = (
    "install the optional extra (pip install 'vlp-surgical[torchcodec]', or uv sync --extra torchcodec) and a "
    "system FFmpeg with shared libraries, major version 4-9 (e.g. apt-get install ffmpeg, or conda install ffmpeg); "
    "or use backend='pyav', which needs neither"
)


def _torchcodec_decoder_class():
    """``torchcodec.decoders.VideoDecoder``, or a :class:`BackendUnavailableError` naming what is missing."""
    try:
        import torchcodec._core.ops as ops
        from torchcodec.decoders import VideoDecoder
    except ModuleNotFoundError as exc:
        if exc.name is not None and not exc.name.startswith("torchcodec"):
            raise
        raise BackendUnavailableError(f"the torchcodec video backend needs the package torchcodec, which is not "
                                      f"installed: {_TORCHCODEC_HELP}") from exc  # fmt: skip
    except (ImportError, OSError, RuntimeError) as exc:
        # Older torchcodec: importing fails when its FFmpeg libraries cannot be loaded.
        raise BackendUnavailableError(f"torchcodec is installed but cannot load FFmpeg ({type(exc).__name__}: "
                                      f"{_first_line(exc)}): {_TORCHCODEC_HELP}") from exc  # fmt: skip
    if not getattr(ops, "_FFMPEG_AVAILABLE", True):
        # torchcodec >= 0.17 imports without FFmpeg (for its image decoders) and fails only when decoding video.
        try:
            ops.load_core_libraries()
            detail = "no FFmpeg found"
        except Exception as exc:  # noqa: BLE001 - only its message is reported
            detail = f"{type(exc).__name__}: {_first_line(exc)}"
        raise BackendUnavailableError(f"torchcodec is installed but cannot load FFmpeg ({detail}): {_TORCHCODEC_HELP}")
    return VideoDecoder


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].split(" Likely causes")[0] if text else ""


class TorchCodecBackend:
    """Decoding with torchcodec (optional; see the module docstring for what it needs).

    Frames come from ``VideoDecoder.get_frames_played_at`` in ``seek_mode="exact"``: the frame whose
    ``[pts, pts + duration)`` contains ``t``, with its own presentation time — the same frame PyAV's backend returns
    (which accepts half a frame of rounding tolerance). Times past the end raise :class:`VideoReadError`.

    Args:
        threads: FFmpeg decoding threads.
        device: decoding device (``"cpu"``; ``"cuda"`` needs torchcodec's CUDA build).

    Raises:
        BackendUnavailableError: at construction, when torchcodec or a usable FFmpeg is missing.
    """

    def __init__(self, threads: int = 1, device: str = "cpu") -> None:
        self._decoder_cls = _torchcodec_decoder_class()
        self.threads, self.device = threads, device

    def _decoder(self, path: str | Path):
        if not Path(path).is_file():
            raise VideoReadError(f"{path}: no such video file")
        try:
            return self._decoder_cls(str(path), dimension_order="NHWC", num_ffmpeg_threads=self.threads,
                                     device=self.device, seek_mode="exact")  # fmt: skip
        except (RuntimeError, ValueError) as exc:
            raise VideoReadError(f"{path}: not a readable video ({exc})") from exc

    def info(self, path: str | Path) -> VideoInfo:
        md = self._decoder(path).metadata
        fps = float(md.average_fps or 0.0)
        duration = float(md.duration_seconds or 0.0)
        n = int(md.num_frames) if md.num_frames is not None else round(duration * fps)
        return VideoInfo(fps, n, duration, int(md.width), int(md.height))

    def read_at(self, path: str | Path, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(times, dtype=np.float64)
        if times.size and np.any(np.diff(times) < 0):
            raise ValueError(f"{path}: requested times must be non-decreasing")
        if not times.size:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
        dec = self._decoder(path)
        end = float(dec.metadata.end_stream_seconds or np.inf)
        if times[-1] >= end:
            raise VideoReadError(f"{path}: requested time {times[-1]:.3f} s is past the end of the decodable video "
                                 f"(it ends at {end:.3f} s); the file may be truncated or corrupt")  # fmt: skip
        try:
            batch = dec.get_frames_played_at(seconds=times.tolist())
        except (RuntimeError, IndexError, ValueError) as exc:
            raise VideoReadError(f"{path}: decoding failed ({exc})") from exc
        return batch.data.cpu().numpy(), batch.pts_seconds.double().cpu().numpy()


def available_backends() -> list[str]:
    """Video backends usable here: ``pyav`` always, ``torchcodec`` when it and a system FFmpeg load."""
    out = ["pyav"]
    try:
        _torchcodec_decoder_class()
        out.append("torchcodec")
    except BackendUnavailableError:
        pass
    return out


_FRAME_RE = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)\.(?P<ext>png|jpe?g)$", re.IGNORECASE)


class FrameFolder:
    """Extracted frames of one video (the common Cholec80 practice), e.g. ``video01/video01_000025.png``.

    Args:
        folder: the folder.
        fps: rate at which the frames were extracted (1 for the usual 1-fps extraction).
        index_base: index of the first frame in the file names (0 or 1); frame ``k`` (0-based) is at ``k / fps`` s.
        allow_gaps: by default a missing index is an error naming the folder and the index.

    Frame files must share one prefix and extension; indices are parsed from the trailing digits.
    """

    def __init__(self, folder: str | Path, fps: float = 1.0, index_base: int = 0, allow_gaps: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise VideoReadError(f"{self.folder}: no such frame folder")
        entries: dict[int, Path] = {}
        prefixes = set()
        for p in self.folder.iterdir():
            m = _FRAME_RE.match(p.name)
            if m is None:
                continue
            prefixes.add((m["prefix"], m["ext"].lower()))
            idx = int(m["index"])
            if idx in entries:
                raise VideoReadError(f"{self.folder}: two files for frame index {idx} ({entries[idx].name}, {p.name})")
            entries[idx] = p
        if not entries:
            raise VideoReadError(f"{self.folder}: no frame images (png/jpg with a trailing index)")
        if len(prefixes) > 1:
            raise VideoReadError(f"{self.folder}: frames with several name patterns {sorted(prefixes)}")
        idx = np.array(sorted(entries))
        if idx[0] < index_base:
            raise VideoReadError(f"{self.folder}: frame index {idx[0]} below index_base={index_base}")
        expected = np.arange(index_base, idx[-1] + 1)
        missing = np.setdiff1d(expected, idx)
        if missing.size and not allow_gaps:
            raise VideoReadError(
                f"{self.folder}: frame folder has gaps: {missing.size} missing indices, first {missing[:5].tolist()}"
            )
        self.fps, self.index_base = float(fps), index_base
        self.paths = entries
        self.n_frames = int(idx[-1] - index_base + 1)

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def read_at(self, times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``uint8 [T, H, W, 3]`` shown at ``times`` and their timestamps (``k / fps``)."""
        from PIL import Image

        times = np.asarray(times, dtype=np.float64)
        k = np.floor(times * self.fps + 1e-6).astype(int)
        if k.size and (k.min() < 0 or k.max() >= self.n_frames):
            raise VideoReadError(
                f"{self.folder}: requested time {times[k.argmax()]:.3f} s is past the last frame "
                f"({self.n_frames} frames at {self.fps:g} fps)"
            )
        frames = []
        for kk in k:
            path = self.paths.get(int(kk) + self.index_base)
            if path is None:
                raise VideoReadError(f"{self.folder}: frame {int(kk) + self.index_base} is missing")
            try:
                with Image.open(path) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            except OSError as exc:
                raise VideoReadError(f"{path}: unreadable image ({exc})") from exc
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise VideoReadError(f"{self.folder}: frames of different sizes {sorted(shapes)}")
        return (np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)), k / self.fps


def get_backend(name: str = "pyav") -> VideoBackend:
    """A video backend by name: ``"pyav"``, ``"torchcodec"`` (raises :class:`BackendUnavailableError` with what to
    install when it cannot run here) or ``"auto"`` (torchcodec when usable, else PyAV)."""
    if name == "pyav":
        return PyAVBackend()
    if name == "torchcodec":
        return TorchCodecBackend()
    if name == "auto":
        return TorchCodecBackend() if "torchcodec" in available_backends() else PyAVBackend()
    raise ValueError(f"unknown video backend {name!r}; available: 'pyav', 'torchcodec', 'auto'")


def read_video(
    path: str | Path,
    fps: float = 1.0,
    start: float = 0.0,
    end: float | None = None,
    backend: str | VideoBackend = "pyav",
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a video file sampled at ``fps`` between ``start`` and ``end`` seconds.

    Returns:
        ``(frames uint8 [T, H, W, 3], timestamps [T])``; timestamps are the frames' own presentation times.
    """
    be = get_backend(backend) if isinstance(backend, str) else backend
    info = be.info(path)
    return be.read_at(path, sample_times(info.duration, fps, start, end))
