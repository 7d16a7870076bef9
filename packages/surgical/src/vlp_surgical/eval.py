"""Zero-shot phase recognition with a pinned protocol, per-video and global metrics, linear probe, timeline PNG.

The protocol follows the reference evaluation (per-frame classification at 1 fps, cosine similarity to one prompt
embedding per phase, argmax) and pins every choice that changed published numbers by 7–15 points: which videos,
the frame rate, the resize, the prompt set, the token length, and how F1 is averaged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlp_surgical.annotations import CHOLEC80_PHASES

__all__ = [
    "PHASE_PROMPTS",
    "RETRIEVAL_LEVELS",
    "ZeroShotProtocol",
    "evaluate_retrieval",
    "format_retrieval_table",
    "level_retrieval",
    "linear_probe",
    "phase_metrics",
    "plot_timeline",
    "prompt_embeddings",
    "retrieval_embeddings",
    "zeroshot_predict",
]

# Descriptions of what happens in each phase, written for evaluation. Their wording must not come from the
# training narrations (tests/test_eval.py checks 4-word overlaps against the generator's vocabulary and output).
PHASE_PROMPTS: dict[str, dict[str, list[str]]] = {
    "cholec80": {
        "Preparation": [
            "Trocar placement and initial inspection of the abdominal cavity before any dissection.",
            "Instruments enter the abdomen through freshly placed access ports.",
        ],
        "CalotTriangleDissection": [
            "Fatty tissue is stripped away with an electrosurgical hook to reveal the cystic structures.",
            "Exposure of the critical view of safety by removing fat.",
        ],
        "ClippingCutting": [
            "Metal clips are deployed across the biliary duct and its accompanying artery, which are then divided.",
            "Occlusion of the biliary duct with clips followed by scissor division.",
        ],
        "GallbladderDissection": [
            "The green gallbladder is freed from the hepatic bed along the dissection plane.",
            "Detaching the gallbladder wall from the liver surface using cautery.",
        ],
        "GallbladderPackaging": [
            "The detached gallbladder is placed inside a white specimen pouch.",
            "Loading the organ into an extraction sack.",
        ],
        "CleaningCoagulation": [
            "Irrigation of the operative field and cautery of bleeding points for hemostasis.",
            "Suction of fluid and control of hemorrhage on the hepatic bed.",
        ],
        "GallbladderRetraction": [
            "The specimen pouch containing the gallbladder is withdrawn from the abdomen.",
            "Pulling the sack with the organ out of the body through a port site.",
        ],
    },
    "autolaparo": {
        "Preparation": ["Port placement and inspection of the pelvis before hysterectomy."],
        "Dividing Ligament and Peritoneum": ["Division of the round ligament and opening of the peritoneum."],
        "Dividing Uterine Vessels and Ligament": ["Sealing and cutting of the uterine artery and cardinal ligament."],
        "Transecting the Vagina": ["Circumferential incision of the vaginal cuff to free the uterus."],
        "Specimen Removal": ["The uterus is extracted through the vagina."],
        "Suturing": ["Closure of the vaginal cuff with stitches."],
        "Washing": ["Irrigation of the pelvis and final inspection."],
    },
}


@dataclass(frozen=True)
class ZeroShotProtocol:
    """Everything that defines a zero-shot phase-recognition number.

    Attributes:
        dataset: ``cholec80`` or ``autolaparo`` (selects phases and prompts).
        split: evaluated split (``test`` = Cholec80 49–80 / AutoLaparo 15–21).
        fps: frames per second classified.
        img_size: frames resized (squashed) to this square size.
        text_max_length: tokenizer length of prompts.
        prompt_ensemble: average the embeddings of all prompts of a phase (else the first prompt only).
        smoothing: window (frames) of a centred moving average of class probabilities; 0 = none.
        f1_labels: ``present`` (classes in y_true ∪ y_pred of each video, the reference) or ``all``.
        logit_scale: multiplier of cosine similarities before the softmax (100 as in the reference).
    """

    dataset: str = "cholec80"
    split: str = "test"
    fps: float = 1.0
    img_size: int = 32
    text_max_length: int = 64
    prompt_ensemble: bool = False
    smoothing: int = 0
    f1_labels: str = "present"
    logit_scale: float = 100.0
    phases: tuple[str, ...] = field(default=CHOLEC80_PHASES)

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_embeddings(model, protocol: ZeroShotProtocol) -> torch.Tensor:
    """Unit-norm class embeddings ``[C, D]`` in the model's zero-shot space, in ``protocol.phases`` order."""
    prompts = PHASE_PROMPTS[protocol.dataset]
    rows = []
    with torch.no_grad():
        for phase in protocol.phases:
            texts = prompts[phase] if protocol.prompt_ensemble else prompts[phase][:1]
            e = F.normalize(model.encode_text(list(texts), model.zeroshot_level), dim=-1).mean(0)
            rows.append(F.normalize(e, dim=0))
    return torch.stack(rows)


def _smooth(probs: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return probs
    k = np.ones(window) / window
    pad = window // 2
    padded = np.pad(probs, ((pad, window - 1 - pad), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], k, mode="valid") for c in range(probs.shape[1])], 1)


def zeroshot_predict(model, frames: torch.Tensor, class_emb: torch.Tensor, protocol: ZeroShotProtocol) -> np.ndarray:
    """Predicted class per frame of one video (``frames uint8 [T, H, W, 3]``)."""
    emb = F.normalize(model.frame_embeddings(frames), dim=-1)
    probs = torch.softmax(protocol.logit_scale * emb @ class_emb.T, dim=-1).numpy()
    return _smooth(probs, protocol.smoothing).argmax(1)


def _f1_macro(y: np.ndarray, p: np.ndarray, labels: Sequence[int]) -> float:
    f1s = []
    for c in labels:
        tp = np.sum((y == c) & (p == c))
        fp = np.sum((y != c) & (p == c))
        fn = np.sum((y == c) & (p != c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def phase_metrics(y_true: list[np.ndarray], y_pred: list[np.ndarray], n_classes: int,
                  f1_labels: str = "present") -> dict[str, float]:  # fmt: skip
    """Accuracy and macro-F1, averaged per video (the reference) and over all frames pooled (global).

    ``f1_labels="present"``: a video's macro-F1 averages the classes in its ``y_true ∪ y_pred`` (the reference);
    ``"all"``: every class. Global F1 always averages the classes present in the pooled ``y_true ∪ y_pred``.
    """
    accs, f1s = [], []
    for y, p in zip(y_true, y_pred):
        accs.append(float(np.mean(y == p)))
        labels = sorted(set(y.tolist()) | set(p.tolist())) if f1_labels == "present" else range(n_classes)
        f1s.append(_f1_macro(y, p, labels))
    y, p = np.concatenate(y_true), np.concatenate(y_pred)
    return {"acc_video": float(np.mean(accs)), "f1_video": float(np.mean(f1s)), "acc_global": float(np.mean(y == p)),
            "f1_global": _f1_macro(y, p, sorted(set(y.tolist()) | set(p.tolist())))}  # fmt: skip


def evaluate_zeroshot(model, items, protocol: ZeroShotProtocol) -> tuple[dict[str, float], list[np.ndarray]]:
    """Zero-shot metrics over ``items`` (``VideoItem`` with frames and labels) and the per-video predictions."""
    model.eval()
    class_emb = prompt_embeddings(model, protocol)
    preds = [zeroshot_predict(model, it.frames, class_emb, protocol) for it in items]
    return phase_metrics([it.labels for it in items], preds, len(protocol.phases), protocol.f1_labels), preds


@torch.no_grad()
def _features(model, items) -> tuple[torch.Tensor, np.ndarray]:
    feats = [model.encode_frames(it.frames) for it in items]
    return torch.cat(feats), np.concatenate([it.labels for it in items])


def linear_probe(model, train_items, val_items, test_items, n_classes: int, epochs: int = 200,
                 weight_decays: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2), seed: int = 0) -> dict:  # fmt: skip
    """Logistic regression on frozen frame features; weight decay chosen on the validation videos only.

    Returns:
        ``{"metrics": phase_metrics on test, "weight_decay": chosen, "val_acc": {wd: acc}, "preds": per-video}``.
    """
    model.eval()
    xtr, ytr = _features(model, train_items)
    xva, yva = _features(model, val_items)
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)

    def fit(wd: float) -> torch.nn.Linear:
        torch.manual_seed(seed)
        lin = torch.nn.Linear(xtr.shape[1], n_classes)
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=wd)
        yt = torch.as_tensor(ytr)
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(lin((xtr - mu) / sd), yt).backward()
            opt.step()
        return lin

    val_acc, fitted = {}, {}
    for wd in weight_decays:
        fitted[wd] = fit(wd)
        with torch.no_grad():
            val_acc[wd] = float((fitted[wd]((xva - mu) / sd).argmax(1).numpy() == yva).mean())
    best = max(weight_decays, key=lambda w: val_acc[w])
    preds = []
    with torch.no_grad():
        for it in test_items:
            preds.append(fitted[best]((model.encode_frames(it.frames) - mu) / sd).argmax(1).numpy())
    metrics = phase_metrics([it.labels for it in test_items], preds, n_classes)
    return {"metrics": metrics, "weight_decay": best, "val_acc": val_acc, "preds": preds}


def plot_timeline(video_ids: list[str], y_true: list[np.ndarray], y_pred: list[np.ndarray], phases: Sequence[str],
                  path: str | Path, title: str = "") -> Path:  # fmt: skip
    """Ground-truth vs predicted phase ribbons per video, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cmap = plt.get_cmap("tab10")
    n = len(video_ids)
    fig, axes = plt.subplots(n, 1, figsize=(9, 0.7 * n + 1.0), squeeze=False)
    for ax, vid, y, p in zip(axes[:, 0], video_ids, y_true, y_pred):
        ax.imshow(np.stack([y, p]), aspect="auto", cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
        ax.set_yticks([0, 1], ["truth", "pred"], fontsize=7)
        ax.set_xticks([])
        ax.set_ylabel(vid, rotation=0, ha="right", va="center", fontsize=7)
    axes[-1, 0].set_xlabel("time (frames at the protocol's fps)")
    fig.legend(handles=[Patch(color=cmap(i), label=ph) for i, ph in enumerate(phases)], loc="lower center",
               ncol=4, fontsize=7, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- text <-> video retrieval
#: Which segments / texts of :func:`vlp_surgical.training.build_batch` each retrieval level pairs.
RETRIEVAL_LEVELS: dict[str, tuple[str, str]] = {
    "clip": ("clip_segments", "clip_texts"),  # clip <-> its narration sentence
    "phase": ("phase_segments", "phase_texts"),  # phase <-> its summary
    "video": ("video_segments", "video_texts"),  # whole video <-> its abstract
}


@torch.no_grad()
def retrieval_embeddings(model, items, levels: Sequence[str] = tuple(RETRIEVAL_LEVELS), fps: float = 1.0,
                         batch_size: int = 256) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Paired ``(visual [S, D], text [S, D])`` embeddings per level, row ``i`` of both sides being one pair.

    Segments are pooled exactly as in training (:meth:`HecVL.pool_segments` over 1-fps frame features, then the
    level's projection); texts go through the level's text projection. ``items`` need narration hierarchies.
    """
    from vlp_surgical.training import build_batch

    model.eval()
    batch = build_batch(list(items), fps)
    frames = batch["frames"]
    feats = torch.cat([model.encode_frames(frames[i : i + batch_size]) for i in range(0, frames.shape[0], batch_size)])
    out = {}
    for level in levels:
        seg_key, txt_key = RETRIEVAL_LEVELS[level]
        if len(batch[txt_key]) == 0:
            continue
        pooled, _, _ = model.pool_segments(feats, batch[seg_key])
        out[level] = (model.vis_proj[level](pooled), model.encode_text(list(batch[txt_key]), level))
    return out


def level_retrieval(visual: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict]:
    """Text→video and video→text retrieval between paired embeddings (pair ``i`` = row ``i`` of both).

    Uses core's chunked :func:`vlp_core.eval.retrieval.retrieval_metrics`: cosine similarity, one positive per query
    (its own pair), ``ties="mean"`` (a tie with a negative — e.g. two identical narration sentences — counts as half
    a rank, and R@K is the expected recall over random tie orders). Query and gallery are different modalities, so
    no query is ever its own candidate (``exclude_self`` does not apply). R@K with ``K >= gallery size`` is trivially
    1 and reported as ``None``.

    Returns:
        ``{"text_to_video": {...}, "video_to_text": {...}}`` with ``R@K``, ``median_rank``, ``mean_rank``,
        ``n_queries``, ``gallery`` (gallery size) and ``chance_R@1`` (``1 / gallery``).
    """
    from vlp_core.eval.retrieval import retrieval_metrics

    if visual.shape[0] != text.shape[0]:
        raise ValueError(f"paired retrieval needs as many texts as segments, got {text.shape[0]} and {visual.shape[0]}")
    n = visual.shape[0]
    out = {}
    for name, (q, g) in {"text_to_video": (text, visual), "video_to_text": (visual, text)}.items():
        m = retrieval_metrics(q.float(), g.float(), None, ks=tuple(ks), ties="mean")
        for k in ks:
            if k >= n:
                m[f"R@{k}"] = None
        m["gallery"] = n
        m["chance_R@1"] = 1.0 / n
        out[name] = m
    return out


def evaluate_retrieval(model, items, ks: Sequence[int] = (1, 5, 10), levels: Sequence[str] = tuple(RETRIEVAL_LEVELS),
                       fps: float = 1.0, prefix: str = "retrieval") -> list[dict]:  # fmt: skip
    """Rows ``{"row", "level", "direction", "R@1", ..., "median_rank", "mean_rank", "n_queries", "gallery",
    "chance_R@1"}`` for every level and both directions over the held-out ``items`` (one gallery per level: all
    segments of all the given videos)."""
    rows = []
    for level, (vis, txt) in retrieval_embeddings(model, items, levels, fps).items():
        if vis.shape[0] < 2:
            continue  # one pair: retrieval is trivial
        for direction, m in level_retrieval(vis, txt, ks).items():
            arrow = "text→video" if direction == "text_to_video" else "video→text"
            rows.append({"row": f"{prefix} {level} {arrow}", "level": level, "direction": direction, **m})
    return rows


def format_retrieval_table(
    rows: list[dict], ks: Sequence[int] = (1, 5, 10), notes: dict[str, str] | None = None
) -> str:
    """Markdown table of :func:`evaluate_retrieval` rows (``–`` where R@K is trivial)."""
    keys = [f"R@{k}" for k in ks]
    lines = ["| row | " + " | ".join(keys) + " | median rank | gallery (chance R@1) | note |",
             "|" + "---|" * (len(keys) + 4)]  # fmt: skip
    for r in rows:
        vals = " | ".join("–" if r[k] is None else f"{r[k]:.3f}" for k in keys)
        note = (notes or {}).get(r["row"], "")
        lines.append(
            f"| {r['row']} | {vals} | {r['median_rank']:g} | {r['gallery']} ({r['chance_R@1']:.3f}) | {note} |"
        )
    return "\n".join(lines)


def write_results(rows: list[dict], out: str | Path, name: str, protocol: ZeroShotProtocol | None = None,
                  retrieval: list[dict] | None = None) -> list[Path]:  # fmt: skip
    """``<out>/<name>.csv`` and ``<out>/<name>.json`` (with the protocol); retrieval rows, when given, go into the
    JSON under ``"retrieval"`` and into ``<out>/retrieval.csv``."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    js = out / f"{name}.json"
    payload = {"rows": rows, "protocol": protocol.to_dict() if protocol else None}
    paths = [csv, js]
    if retrieval is not None:
        payload["retrieval"] = retrieval
        rcsv = out / "retrieval.csv"
        pd.DataFrame(retrieval).to_csv(rcsv, index=False)
        paths.append(rcsv)
    js.write_text(json.dumps(payload, indent=1))
    return paths


def format_table(rows: list[dict]) -> str:
    keys = ["row", "acc_video", "f1_video", "acc_global", "f1_global"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) if k == "row" else f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)
