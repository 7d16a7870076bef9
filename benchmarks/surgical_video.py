"""Video decoding + 1-fps sampling throughput of the PyAV backend on a 25 fps H.264 MP4.

Compares, in one run (interleaved, medians): sparse sampling with seeking (``seek_gap=0.5`` s: seek to the key frame
before every sample) against decoding every frame and keeping one per second (``seek_gap=inf``), at key-frame
intervals of 1 s and 10 s (long GOPs make seeking decode more frames per sample).

    uv run python benchmarks/surgical_video.py            # 120 s of 224x224 video
    uv run python benchmarks/surgical_video.py --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import env_line, interleaved, markdown_table, median  # noqa: E402

from vlp_surgical.video import PyAVBackend, read_video  # noqa: E402


def write(path: Path, seconds: int, size: int, gop: int) -> None:
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"g": str(gop)}
        for i in range(seconds * 25):
            frame = np.roll(base, i, axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds, size, repeats = (20, 64, 2) if args.quick else (120, 224, 3)
    print(f"- {env_line()}")
    print("- reproduce: `uv run python benchmarks/surgical_video.py" + (" --quick`" if args.quick else "`"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (25, 250):
            path = Path(tmp) / f"g{gop}.mp4"
            write(path, seconds, size, gop)

            def run(seek_gap: float, path: Path = path) -> float:
                t = time.perf_counter()
                frames, ts = read_video(path, fps=1.0, backend=PyAVBackend(seek_gap=seek_gap))
                assert len(frames) == seconds and np.allclose(ts, np.arange(seconds))
                return time.perf_counter() - t

            times = interleaved({"seek": lambda: run(0.5), "decode all": lambda: run(float("inf"))}, repeats)
            base = median(times["decode all"])
            for name in ("seek", "decode all"):
                t = median(times[name])
                rows.append([f"{size}x{size}, {seconds} s, key frame every {gop / 25:g} s" if name == "seek" else "",
                             name, f"{seconds / t:.1f}", f"{seconds * 25 / t:.0f}", f"{base / t:.2f}×"])  # fmt: skip
    print()
    print(markdown_table(["video", "strategy", "sampled frames/s (1 fps)", "video-seconds×25 / s",
                          "speed-up vs decode all"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
