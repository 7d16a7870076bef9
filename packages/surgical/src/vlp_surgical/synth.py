"""Procedure generator: rendered laparoscopic-cholecystectomy-like videos with Cholec80-format annotations and
narrations, so the demo runs through the same readers as real data.

Each video walks through the seven Cholec80 phases in order (cleaning and retraction sometimes swapped, as in real
procedures), 4–8 s each at 25 fps. Every phase has its own look, drawn as simple shapes over a moving, textured
pink background: instruments (grasper, hook, clip applier, irrigator) with their own colour and motion, tissue state
(yellow fat, a green gallbladder, silver clips on a dark duct, red bleeding, a white specimen bag). Phase durations,
positions, colours and motions are randomised per video.

Written files (``root`` below)::

    videos/videoNN.mp4                       25 fps H.264 (PyAV)
    frames/videoNN/videoNN_000000.png        1-fps frame folder (0-based)
    phase_annotations/videoNN-phase.txt      Cholec80 format: Frame<TAB>Phase, one row per frame at 25 fps
    narrations.csv                           the narration schema of vlp_surgical.narration
    silent_clips.csv                         unnarrated clips: video_id, id, start, end (see ``silent_fraction``)
    splits.json                              {"train": [...], "val": [...], "test": [...]}

Narrations are written in surgical language with varied phrasing: clip narrations every 1.5–3 s, one summary per
phase and one abstract per video. With ``silent_fraction > 0`` each clip narration is dropped with that probability
(as when the surgeon says nothing): its row is absent from ``narrations.csv`` and its time span is listed in
``silent_clips.csv`` instead — the unnarrated ("silent") clips that OphCLIP-style retrieval augmentation
(:class:`vlp_surgical.losses.SilentClipBank`) draws extra positives from. The frames are unchanged. The descriptive prompts used for zero-shot evaluation (``vlp_surgical.prompts``)
use different wording; a test checks that no prompt sentence or 4-word run of one occurs in the narrations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vlp_surgical.annotations import CHOLEC80_PHASES

__all__ = ["CLIP_TEMPLATES", "make_procedures", "render_video"]

FPS = 25
_HOLD = 5  # content is rendered at 5 Hz and held for 5 frames (rendering cost, not file format, is the limit)

# Per phase: clip narration templates with slots, filled from the synonym lists below.
CLIP_TEMPLATES: dict[str, list[str]] = {
    "Preparation": [
        "{now} the trocars are in and we {insert} the {grasper}",
        "{now} we {insert} the camera and have a first look at the abdomen",
        "the {grasper} comes in from the right port",
        "{now} we set up our ports and get ready",
        "pneumoperitoneum is established and the {grasper} is introduced",
    ],
    "CalotTriangleDissection": [
        "{now} we {dissect} the fatty tissue in calot's triangle with the {hook}",
        "we {dissect} the peritoneum to expose the cystic duct",
        "the {hook} is used to {dissect} the fat around the cystic artery",
        "{now} we continue to {dissect} in the hepatocystic triangle",
        "we strip the yellow fat off the structures with the {hook}",
    ],
    "ClippingCutting": [
        "{now} we {apply} a {clip} on the cystic duct",
        "a second {clip} goes on the cystic artery",
        "we {apply} {clip}s and then {cut} between them",
        "{now} we {cut} the duct with the scissors between the {clip}s",
        "the {clip} applier is in and we {apply} the {clip}",
    ],
    "GallbladderDissection": [
        "{now} we {separate} the gallbladder from the liver bed",
        "the {hook} runs along the plane between gallbladder and liver",
        "we {separate} the gallbladder staying close to its wall",
        "{now} the gallbladder is almost free from the liver",
        "we keep traction on the gallbladder and {separate} it",
    ],
    "GallbladderPackaging": [
        "{now} we put the gallbladder into the {bag}",
        "the {bag} is opened and the specimen goes inside",
        "we place the specimen in the {bag} and close it",
        "{now} the gallbladder sits in the {bag}",
        "the {bag} is introduced for the specimen",
    ],
    "CleaningCoagulation": [
        "{now} we {irrigate} the liver bed and check for bleeding",
        "we {coagulate} a small bleeder with the bipolar",
        "we {irrigate} and suction the blood",
        "{now} we {coagulate} the oozing points on the liver bed",
        "final check for hemostasis after we {irrigate}",
    ],
    "GallbladderRetraction": [
        "{now} we pull the {bag} out through the port",
        "the specimen is extracted with the {bag}",
        "we remove the {bag} through the umbilical incision",
        "{now} the gallbladder comes out in the {bag}",
        "extraction of the {bag} under vision",
    ],
}
PHASE_SUMMARIES: dict[str, list[str]] = {
    "Preparation": ["ports are placed and the {grasper} is introduced", "setting up the ports and the camera"],
    "CalotTriangleDissection": [
        "dissection of calot's triangle with the {hook}",
        "we {dissect} the fat to expose the cystic duct and artery",
    ],  # fmt: skip
    "ClippingCutting": ["the cystic duct and artery are clipped and cut", "we {apply} {clip}s and {cut} the duct"],
    "GallbladderDissection": [
        "we {separate} the gallbladder from the liver bed",
        "dissection of the gallbladder off the liver with the {hook}",
    ],  # fmt: skip
    "GallbladderPackaging": ["the gallbladder is put in a {bag}", "packaging of the specimen in the {bag}"],
    "CleaningCoagulation": ["we {irrigate} and {coagulate} the liver bed", "cleaning and hemostasis of the liver bed"],
    "GallbladderRetraction": ["the {bag} with the gallbladder is extracted", "removal of the specimen {bag}"],
}
SYNONYMS = {
    "now": ["now", "okay now", "so", "next", "here", "at this point"],
    "insert": ["insert", "introduce", "bring in"],
    "grasper": ["grasper", "grasping forceps", "atraumatic grasper"],
    "hook": ["hook", "monopolar hook", "l-hook"],
    "dissect": ["dissect", "open up", "clear"],
    "apply": ["apply", "fire", "place"],
    "clip": ["clip", "titanium clip", "hemoclip"],
    "cut": ["cut", "divide", "transect"],
    "separate": ["separate", "detach", "peel"],
    "bag": ["bag", "retrieval bag", "endobag"],
    "irrigate": ["irrigate", "wash", "rinse"],
    "coagulate": ["coagulate", "cauterize", "seal"],
}


def _fill(template: str, rng: np.random.Generator) -> str:
    out = template
    for key, words in SYNONYMS.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", str(rng.choice(words)), 1)
    return out


def _phase_order(rng: np.random.Generator) -> list[int]:
    order = list(range(7))
    if rng.random() < 0.3:
        order[5], order[6] = order[6], order[5]
    return order


def render_video(phases: list[tuple[int, int]], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames ``uint8 [T, size, size, 3]`` for a sequence of ``(phase_id, n_frames)``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    total = sum(n for _, n in phases)
    out = np.empty((total, size, size, 3), np.uint8)
    phase_seed = rng.random((7, 4))
    drift = rng.uniform(0.2, 0.6)
    t0 = 0
    for pid, n in phases:
        cx, cy = 0.35 + 0.3 * phase_seed[pid, 0], 0.35 + 0.3 * phase_seed[pid, 1]
        for k in range(0, n, _HOLD):
            t = (t0 + k) / FPS
            tau = k / max(n - 1, 1)  # progress within the phase
            # Moving tissue texture (camera motion) in pink/red.
            tex = 0.5 + 0.25 * np.sin(9 * (xx + drift * np.sin(0.3 * t)) + 4 * yy) * np.cos(7 * yy - 0.4 * t)
            img = np.stack([0.75 + 0.2 * tex, 0.35 + 0.2 * tex, 0.4 + 0.15 * tex], -1)
            wob = 0.05 * np.sin(2.0 * t + phase_seed[pid, 2] * 6)

            def disc(x0: float, y0: float, r: float, colour: tuple[float, float, float], a: float = 1.0) -> None:
                m = ((xx - x0) ** 2 + (yy - y0) ** 2) < r * r
                img[m] = (1 - a) * img[m] + a * np.asarray(colour)  # noqa: B023 - called within the iteration

            def bar(x0: float, y0: float, x1: float, y1: float, w: float, colour: tuple[float, float, float]) -> None:
                dx, dy = x1 - x0, y1 - y0
                s = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
                m = (xx - x0 - s * dx) ** 2 + (yy - y0 - s * dy) ** 2 < w * w
                img[m] = colour  # noqa: B023

            if pid == 0:  # preparation: grey grasper sliding in from the right, plain tissue, bright
                img[:] = np.minimum(img * 1.15, 1.0)
                bar(1.05, 0.3 + wob, 1.0 - 0.6 * tau, 0.45 + wob, 0.035, (0.6, 0.6, 0.62))
            elif pid == 1:  # calot: yellow fat blobs, thin dark hook moving fast
                for j in range(4):
                    disc(cx + 0.15 * np.cos(j * 1.7), cy + 0.12 * np.sin(j * 2.3), 0.09, (0.95, 0.85, 0.3))
                hx, hy = cx + 0.15 * np.sin(5 * t), cy + 0.1 * np.cos(4 * t)
                bar(0.0, 1.0, hx, hy, 0.015, (0.15, 0.15, 0.15))
                bar(hx, hy, hx + 0.06, hy, 0.015, (0.15, 0.15, 0.15))
            elif pid == 2:  # clipping: dark duct with silver clips accumulating, clip applier
                bar(0.1, cy, 0.9, cy + 0.1, 0.05, (0.35, 0.2, 0.25))
                for j in range(1 + int(tau * 3.99)):
                    x = 0.35 + 0.12 * j
                    bar(x, cy - 0.06 + 0.0125 * j, x, cy + 0.14 + 0.0125 * j, 0.018, (0.85, 0.85, 0.9))
                bar(1.0, 0.0, 0.4 + 0.12 * int(tau * 3.99), cy - 0.08, 0.03, (0.45, 0.45, 0.5))
            elif pid == 3:  # gallbladder dissection: large green gallbladder, hook along its edge
                disc(cx, cy, 0.25 - 0.05 * tau, (0.3, 0.6, 0.25))
                a = 3 * t
                hx, hy = cx + 0.25 * np.cos(a), cy + 0.25 * np.sin(a)
                bar(0.0, 0.0, hx, hy, 0.015, (0.15, 0.15, 0.15))
            elif pid == 4:  # packaging: white bag with the green gallbladder going in
                disc(0.5, 0.55, 0.3, (0.92, 0.92, 0.95))
                disc(0.5 + 0.3 * (1 - tau), 0.55 - 0.2 * (1 - tau), 0.12, (0.3, 0.6, 0.25))
            elif pid == 5:  # cleaning/coagulation: red bleeding spots, blue irrigator, watery haze
                for j in range(5):
                    disc(0.2 + 0.15 * j, 0.5 + 0.2 * np.sin(j * 1.3), 0.05 * (1 - 0.6 * tau), (0.7, 0.0, 0.05))
                bar(0.0, 0.2 + wob, 0.55, 0.5, 0.03, (0.2, 0.3, 0.85))
                img[:] = 0.8 * img + 0.2 * np.asarray((0.7, 0.8, 0.95))
            else:  # retraction: bag pulled out towards the top-left port, shrinking
                r = 0.25 * (1 - 0.7 * tau)
                disc(0.5 - 0.35 * tau, 0.5 - 0.35 * tau, r, (0.92, 0.92, 0.95))
                bar(0.0, 0.0, 0.5 - 0.35 * tau, 0.5 - 0.35 * tau, 0.025, (0.6, 0.6, 0.62))
            vignette = 1.0 - 0.6 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
            img *= vignette[..., None]
            out[t0 + k : t0 + min(k + _HOLD, n)] = np.clip(img * 255 + rng.normal(0, 4, img.shape), 0, 255).astype(
                np.uint8
            )
        t0 += n
    return out


def _write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "20", "g": str(2 * fps)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_procedures(
    root: str | Path,
    n_train: int = 16,
    n_val: int = 4,
    n_test: int = 8,
    size: int = 64,
    phase_seconds: tuple[float, float] = (4.0, 8.0),
    seed: int = 0,
    progress: bool = False,
    silent_fraction: float = 0.0,
) -> Path:
    """Write a small Cholec80-like corpus (see the module docstring); skipped if ``root/done.json`` matches.

    ``silent_fraction``: probability that a clip narration is left out (its span goes to ``silent_clips.csv``).

    Returns:
        ``root``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    root = Path(root)
    params = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size,
              "phase_seconds": list(phase_seconds), "seed": seed, "version": 2,
              "silent_fraction": silent_fraction}  # fmt: skip
    done = root / "done.json"
    if done.is_file() and json.loads(done.read_text()) == params:
        return root
    for sub in ("videos", "frames", "phase_annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    silent_rng = np.random.default_rng([seed, 1])  # separate stream: the narrated corpus is the same for any fraction
    silent_rows = []
    n = n_train + n_val + n_test
    ids = [f"video{i:02d}" for i in range(1, n + 1)]
    rows = []
    for vid in tqdm(ids, desc="rendering procedures", disable=not progress):
        order = _phase_order(rng)
        segs = [(pid, int(round(rng.uniform(*phase_seconds) * FPS))) for pid in order]
        frames = render_video(segs, size, rng)
        _write_mp4(root / "videos" / f"{vid}.mp4", frames)
        folder = root / "frames" / vid
        folder.mkdir(exist_ok=True)
        for k in range(0, len(frames), FPS):
            Image.fromarray(frames[k]).save(folder / f"{vid}_{k // FPS:06d}.png")
        labels = np.concatenate([np.full(nf, pid) for pid, nf in segs])
        lines = ["Frame\tPhase"] + [f"{f}\t{CHOLEC80_PHASES[p]}" for f, p in enumerate(labels)]
        (root / "phase_annotations" / f"{vid}-phase.txt").write_text("\n".join(lines) + "\n")
        # Narrations: video abstract, one summary per phase, clip narrations inside each phase.
        duration = len(frames) / FPS
        names = [CHOLEC80_PHASES[p] for p, _ in segs]
        abstract = ("laparoscopic cholecystectomy: " + ", then ".join(
            _fill(str(rng.choice(PHASE_SUMMARIES[nm])), rng) for nm in names))  # fmt: skip
        rows.append({"video_id": vid, "id": vid, "level": "video", "start": 0.0, "end": duration,
                     "text": abstract, "parent_id": ""})  # fmt: skip
        t = 0.0
        for j, (pid, nf) in enumerate(segs):
            name = CHOLEC80_PHASES[pid]
            pend = t + nf / FPS
            phase_id = f"{vid}_p{j}"
            rows.append({"video_id": vid, "id": phase_id, "level": "phase", "start": round(t, 3),
                         "end": round(pend, 3), "text": _fill(str(rng.choice(PHASE_SUMMARIES[name])), rng),
                         "parent_id": vid})  # fmt: skip
            c0, k = t, 0
            while c0 + 1.5 <= pend:
                c1 = min(pend, c0 + rng.uniform(1.5, 3.0))
                row = {"video_id": vid, "id": f"{phase_id}_c{k}", "level": "clip", "start": round(c0, 3),
                       "end": round(c1, 3), "text": _fill(str(rng.choice(CLIP_TEMPLATES[name])), rng),
                       "parent_id": phase_id}  # fmt: skip
                if silent_rng.random() < silent_fraction:
                    silent_rows.append({k: row[k] for k in ("video_id", "id", "start", "end")})
                else:
                    rows.append(row)
                c0, k = c1, k + 1
            t = pend
    pd.DataFrame(rows).to_csv(root / "narrations.csv", index=False)
    pd.DataFrame(silent_rows, columns=["video_id", "id", "start", "end"]).to_csv(root / "silent_clips.csv", index=False)
    splits = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}
    (root / "splits.json").write_text(json.dumps(splits, indent=1))
    done.write_text(json.dumps(params))
    return root
