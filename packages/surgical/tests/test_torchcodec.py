"""Optional torchcodec backend: clear errors when torchcodec or FFmpeg is missing, the wrapper's contract against a
stand-in decoder, and (only where torchcodec and a system FFmpeg load) agreement with PyAV on a real file."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vlp_surgical.video import (
    BackendUnavailableError,
    PyAVBackend,
    TorchCodecBackend,
    VideoReadError,
    available_backends,
    get_backend,
    read_video,
)


@pytest.fixture()
def no_torchcodec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "torchcodec" or m.startswith("torchcodec.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)


def test_missing_torchcodec_error_names_what_to_install(no_torchcodec: None) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("torchcodec")
    msg = str(info.value)
    assert "not installed" in msg and "vlp-surgical[torchcodec]" in msg and "FFmpeg" in msg and "pyav" in msg
    assert isinstance(info.value, ImportError)
    assert available_backends() == ["pyav"] and isinstance(get_backend("auto"), PyAVBackend)


def _fake_torchcodec(root: Path, ffmpeg: bool) -> None:
    pkg = root / "torchcodec"
    (pkg / "decoders").mkdir(parents=True)
    (pkg / "_core").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_core" / "__init__.py").write_text("")
    (pkg / "_core" / "ops.py").write_text(
        textwrap.dedent(f"""
        _FFMPEG_AVAILABLE = {ffmpeg}
        def load_core_libraries():
            raise RuntimeError("Could not load libtorchcodec. Likely causes: no FFmpeg")
    """)
    )
    # A stand-in decoder: 10 frames at 5 fps, frame k is filled with the value 10 * k, each shown for [k/5, (k+1)/5).
    (pkg / "decoders" / "__init__.py").write_text(
        textwrap.dedent("""
        from types import SimpleNamespace
        import torch

        class VideoDecoder:
            def __init__(self, source, dimension_order="NCHW", num_ffmpeg_threads=1, device="cpu", seek_mode="exact"):
                assert dimension_order == "NHWC" and seek_mode == "exact"
                self.metadata = SimpleNamespace(average_fps=5.0, num_frames=10, duration_seconds=2.0, width=4,
                                                height=3, end_stream_seconds=2.0)

            def get_frames_played_at(self, seconds):
                idx = [int(s * 5 + 1e-9) for s in seconds]
                data = torch.stack([torch.full((3, 4, 3), 10 * i, dtype=torch.uint8) for i in idx])
                return SimpleNamespace(data=data, pts_seconds=torch.tensor([i / 5 for i in idx]),
                                       duration_seconds=torch.full((len(idx),), 0.2))
    """)
    )


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    for name in [m for m in sys.modules if m == "torchcodec" or m.startswith("torchcodec.")]:
        monkeypatch.delitem(sys.modules, name)
    _fake_torchcodec(tmp_path / "site", ffmpeg=request.param)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded by the stand-in")
    yield video
    for name in [m for m in sys.modules if m == "torchcodec" or m.startswith("torchcodec.")]:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("fake", [False], indirect=True)
def test_torchcodec_without_ffmpeg_error(fake: Path) -> None:
    with pytest.raises(
        BackendUnavailableError, match=r"cannot load FFmpeg \(RuntimeError: Could not load libtorchcodec"
    ):
        TorchCodecBackend()
    assert available_backends() == ["pyav"]


@pytest.mark.parametrize("fake", [True], indirect=True)
def test_torchcodec_wrapper_contract(fake: Path) -> None:
    assert available_backends() == ["pyav", "torchcodec"]
    be = get_backend("auto")
    assert isinstance(be, TorchCodecBackend)
    info = be.info(fake)
    assert (info.fps, info.n_frames, info.duration, info.width, info.height) == (5.0, 10, 2.0, 4, 3)
    frames, times = read_video(fake, fps=2.0, backend=be)  # t = 0, 0.5, 1.0, 1.5 -> frames 0, 2, 5, 7
    assert frames.shape == (4, 3, 4, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 20, 50, 70]
    np.testing.assert_allclose(times, [0.0, 0.4, 1.0, 1.4])
    with pytest.raises(VideoReadError, match="past the end"):
        be.read_at(fake, [0.5, 2.5])
    with pytest.raises(ValueError, match="non-decreasing"):
        be.read_at(fake, [1.0, 0.5])
    with pytest.raises(VideoReadError, match="no such video"):
        be.info(fake.with_name("missing.mp4"))


def test_torchcodec_decodes_like_pyav(tmp_path: Path) -> None:
    if "torchcodec" not in available_backends():
        pytest.skip("torchcodec and a system FFmpeg are not both available here (optional backend)")
    from vlp_surgical.synth import _write_mp4

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), 25, axis=0)  # 8 s, new image each second
    _write_mp4(tmp_path / "v.mp4", frames)
    a, ta = read_video(tmp_path / "v.mp4", fps=1.0, backend="pyav")
    b, tb = read_video(tmp_path / "v.mp4", fps=1.0, backend="torchcodec")
    np.testing.assert_allclose(ta, tb)
    assert a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) < 3.0
