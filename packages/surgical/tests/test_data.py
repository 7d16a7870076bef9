"""Readers on files written in the exact public formats: PyAV video, frame folders, Cholec80/AutoLaparo, narrations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vlp_surgical.annotations import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    AnnotationError,
    autolaparo_split,
    cholec80_split,
    labels_at,
    read_autolaparo_phases,
    read_cholec80_phases,
    read_cholec80_tools,
)
from vlp_surgical.narration import NarrationError, read_narrations
from vlp_surgical.video import FrameFolder, PyAVBackend, VideoReadError, read_video, sample_times


def _write_mp4(path: Path, n: int, fps: int = 25, size: int = 32) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"g": "25"}  # a key frame every second, so seeking is exercised
        for i in range(n):
            # Frame i encodes its own index in the brightness (i * 2 stays distinguishable after compression).
            a = np.full((size, size, 3), (i * 2) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("vid") / "v.mp4"
    _write_mp4(p, 100)  # 4 s at 25 fps
    return p


def test_pyav_samples_at_1fps_with_exact_timestamps(mp4: Path) -> None:
    info = PyAVBackend().info(mp4)
    assert (info.fps, info.n_frames, info.width) == (25.0, 100, 32)
    assert info.duration == pytest.approx(4.0)
    frames, ts = read_video(mp4, fps=1.0)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(ts, [0, 1, 2, 3])
    np.testing.assert_allclose(frames[:, 0, 0, :].mean(-1), [0, 50, 100, 150], atol=4)


@pytest.mark.parametrize("seek_gap", [0.0, 100.0])
def test_sparse_reads_seek_and_match_dense_decoding(mp4: Path, seek_gap: float) -> None:
    times = [0.2, 1.96, 3.0, 3.5]
    frames, ts = PyAVBackend(seek_gap=seek_gap).read_at(mp4, times)
    np.testing.assert_allclose(ts, [0.2, 1.96, 3.0, 3.52])  # 3.5 lies between frames 87 (3.48) and 88: nearest
    np.testing.assert_allclose(frames[:, 0, 0, 0], [10, 98, 150, 176], atol=4)


def test_corrupt_and_truncated_video_errors_name_the_file(mp4: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(VideoReadError, match="past the end"):
        PyAVBackend().read_at(mp4, [1.0, 9.0])
    with pytest.raises(VideoReadError, match="no such"):
        read_video(tmp_path / "absent.mp4")


def test_sample_times() -> None:
    np.testing.assert_allclose(sample_times(3.0, 1.0), [0, 1, 2])
    np.testing.assert_allclose(sample_times(10.0, 2.0, start=1.0, end=3.0), [1, 1.5, 2, 2.5])


def test_frame_folder_reads_and_rejects_gaps(tmp_path: Path) -> None:
    from PIL import Image

    d = tmp_path / "video01"
    d.mkdir()
    for k in range(1, 6):  # 1-based names, like the CAMMA CSVs' files
        Image.fromarray(np.full((8, 8, 3), k * 10, np.uint8)).save(d / f"video01_{k}.png")
    ff = FrameFolder(d, fps=1.0, index_base=1)
    frames, ts = ff.read_at([0, 2.5, 4])
    np.testing.assert_allclose(ts, [0, 2, 4])
    assert frames[:, 0, 0, 0].tolist() == [10, 30, 50]
    with pytest.raises(VideoReadError, match="past the last frame"):
        ff.read_at([5.0])
    (d / "video01_3.png").unlink()
    with pytest.raises(VideoReadError, match=r"gaps.*\[3\]"):
        FrameFolder(d, index_base=1)
    assert FrameFolder(d, index_base=1, allow_gaps=True).n_frames == 5


def _cholec_phase_file(path: Path, segments: list[tuple[str, int]]) -> None:
    lines = ["Frame\tPhase"]
    f = 0
    for name, n in segments:
        for _ in range(n):
            lines.append(f"{f}\t{name}")
            f += 1
    path.write_text("\n".join(lines) + "\n")


def test_cholec80_phase_file(tmp_path: Path) -> None:
    p = tmp_path / "video01-phase.txt"
    _cholec_phase_file(p, [("Preparation", 60), ("CalotTriangleDissection", 40), ("ClippingCutting", 30)])
    ann = read_cholec80_phases(p)
    assert ann["frame"].tolist() == [0, 25, 50, 75, 100, 125]
    np.testing.assert_allclose(ann["time"], [0, 1, 2, 3, 4, 5])
    assert ann["label"].tolist() == [0, 0, 0, 1, 2, 2]
    assert ann["phase"].iloc[3] == "CalotTriangleDissection"
    full = read_cholec80_phases(p, sample_fps=None)
    assert len(full) == 130
    assert labels_at(full, np.array([2.39, 2.41, 4.1])).tolist() == [0, 1, 2]
    # With a 1-based index base the same rows sit one frame earlier in time.
    np.testing.assert_allclose(read_cholec80_phases(p, sample_fps=None, frame_index_base=1)["time"].iloc[1], 0.0)


def test_cholec80_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "video02-phase.txt"
    p.write_text("Frame\tPhase\n0\tPreparation\n1\tPreperation\n")
    with pytest.raises(AnnotationError, match=r"video02-phase.txt, line 3: unknown phase 'Preperation'"):
        read_cholec80_phases(p)
    p.write_text("Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tPreparation\n")
    with pytest.raises(AnnotationError, match=r"line 4: frame 2 is past the end of the video \(2 frames"):
        read_cholec80_phases(p, n_frames=2)
    p.write_text("Frame\tPhase\n0\tPreparation\n0\tPreparation\n")
    with pytest.raises(AnnotationError, match="line 3: frame 0 does not increase"):
        read_cholec80_phases(p)
    p.write_text("Frame,Phase\n0,Preparation\n")
    with pytest.raises(AnnotationError, match="expected header"):
        read_cholec80_phases(p)


def test_cholec80_tools(tmp_path: Path) -> None:
    p = tmp_path / "video01-tool.txt"
    p.write_text("Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n0\t1\t0\t0\t0\t0\t0\t0\n25\t1\t0\t1\t0\t0\t0\t0\n")
    tools = read_cholec80_tools(p)
    assert tools["Hook"].tolist() == [0, 1] and tools["time"].tolist() == [0.0, 1.0]
    p.write_text("Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n0\t2\t0\t0\t0\t0\t0\t0\n")
    with pytest.raises(AnnotationError, match="line 2: Grasper must be 0 or 1"):
        read_cholec80_tools(p)


def test_autolaparo_is_one_based(tmp_path: Path) -> None:
    p = tmp_path / "label_15.txt"
    p.write_text("Frame\tPhase\n1\t1\n2\t1\n3\t2\n4\t7\n")
    ann = read_autolaparo_phases(p)
    assert ann["label"].tolist() == [0, 0, 1, 6]
    np.testing.assert_allclose(ann["time"], [0, 1, 2, 3])
    assert ann["phase"].iloc[-1] == "Washing"
    p.write_text("Frame\tPhase\n1\t8\n")
    with pytest.raises(AnnotationError, match="line 2: phase id '8'"):
        read_autolaparo_phases(p)


def test_standard_splits() -> None:
    assert len(cholec80_split("train")) == 40 and len(cholec80_split("val")) == 8
    assert cholec80_split("test")[0] == "video49" and cholec80_split("test")[-1] == "video80"
    assert autolaparo_split("train")[-1] == "10" and autolaparo_split("test") == [f"{i}" for i in range(15, 22)]
    with pytest.raises(ValueError, match="split"):
        cholec80_split("dev")
    assert CHOLEC80_PHASES[2] == "ClippingCutting"


def _narr_rows() -> list[dict]:
    return [
        {"video_id": "v1", "id": "v1", "level": "video", "start": 0, "end": 30, "text": "abstract", "parent_id": ""},
        {"video_id": "v1", "id": "p2", "level": "phase", "start": 10, "end": 30, "text": "second", "parent_id": "v1"},
        {"video_id": "v1", "id": "p1", "level": "phase", "start": 0, "end": 10, "text": "first", "parent_id": "v1"},
        {"video_id": "v1", "id": "c3", "level": "clip", "start": 12, "end": 14, "text": "c", "parent_id": "p2"},
        {"video_id": "v1", "id": "c2", "level": "clip", "start": 5, "end": 8, "text": "b", "parent_id": "p1"},
        {"video_id": "v1", "id": "c1", "level": "clip", "start": 1, "end": 3, "text": "a", "parent_id": "p1"},
        {"video_id": "v1", "id": "c4", "level": "clip", "start": 20, "end": 22, "text": "d", "parent_id": "p2"},
    ]


def test_narrations_hierarchy_keeps_temporal_order(tmp_path: Path) -> None:
    p = tmp_path / "narr.csv"
    pd.DataFrame(_narr_rows()).to_csv(p, index=False)
    n = read_narrations(p)
    v = n.videos["v1"]
    assert v.abstract == "abstract"
    assert [ph.text for ph in v.phases] == ["first", "second"]
    assert [[c.text for c in ph.clips] for ph in v.phases] == [["a", "b"], ["c", "d"]]
    assert [c.text for _, c in n.clips()] == ["a", "b", "c", "d"]
    pq = tmp_path / "narr.parquet"
    pd.DataFrame(_narr_rows()).to_parquet(pq)
    assert [ph.text for ph in read_narrations(pq).videos["v1"].phases] == ["first", "second"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"id": "c1", "end": 0.5}, r"row 6 \(id 'c1'\): end 0.5 < start 1"),
        ({"id": "c1", "level": "scene"}, "unknown level 'scene'"),
        ({"id": "c1", "parent_id": "nope"}, "parent 'nope' does not exist"),
        ({"id": "c1", "parent_id": "v1"}, "a clip needs a phase"),
        ({"id": "c4", "end": 40}, "lies outside its parent 'p2'"),
        ({"id": "p2", "start": 8}, "overlaps the previous phase 'p1'"),
        ({"id": "c2", "text": ""}, "empty text"),
    ],
)
def test_narration_errors_name_file_and_row(tmp_path: Path, edit: dict, message: str) -> None:
    rows = _narr_rows()
    for r in rows:
        if r["id"] == edit["id"]:
            r.update({k: v for k, v in edit.items() if k != "id"})
    p = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    with pytest.raises(NarrationError, match=message):
        read_narrations(p)
    assert "bad.csv" in str(pytest.raises(NarrationError, read_narrations, p).value)


def test_narration_skip_bad_counts_and_drops_children(tmp_path: Path) -> None:
    rows = _narr_rows()
    rows[1]["start"] = 8  # p2 overlaps p1 -> p2 dropped, and its clips c3, c4 with it
    p = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    n = read_narrations(p, skip_bad=True)
    assert n.policy.n_skipped == 3
    assert [ph.id for ph in n.videos["v1"].phases] == ["p1"]
    assert [c.text for _, c in n.clips()] == ["a", "b"]
    pd.DataFrame(rows).drop(columns=["parent_id"]).to_csv(p, index=False)
    with pytest.raises(ValueError, match="missing narration columns"):
        read_narrations(p)
