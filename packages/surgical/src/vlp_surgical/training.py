"""Hierarchical pretraining on a procedure corpus: data assembly, the HecVL(+DTW) objective and a small seeded loop.

One batch holds a few whole videos: all their 1-fps frames are encoded once and every level is pooled from the same
frame features — clips (narrations), phases (summaries; and the mean of their clip narrations), videos (abstracts).
The PeskaVLP term aligns each video's frames with its ordered phase summaries and each phase's frames with its
ordered clip narrations by soft-DTW, against reversed / shuffled / locally permuted orders.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vlp_core.losses import MultiPositiveClipLoss, dist_info
from vlp_surgical.augment import augment_frames
from vlp_surgical.losses import ProcedureDTWLoss, SilentClipBank, nt_xent, retrieval_positives
from vlp_surgical.models import HecVL
from vlp_surgical.narration import Video, read_narrations
from vlp_surgical.video import FrameFolder

__all__ = ["HecVLObjective", "ProcedureCorpus", "VideoItem", "build_batch", "pretrain"]


@dataclass
class VideoItem:
    """One video: 1-fps frames ``uint8 [T, H, W, 3]``, its narration hierarchy and its unnarrated clip spans."""

    video_id: str
    frames: Tensor
    hierarchy: Video | None = None
    labels: np.ndarray | None = None
    silent: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ProcedureCorpus:
    """Videos of one split loaded from a Cholec80-style root (frame folders + narrations + phase annotations).

    Args:
        root: folder with ``frames/<vid>/``, ``narrations.csv``, ``phase_annotations/<vid>-phase.txt``,
            ``splits.json`` and optionally ``silent_clips.csv`` (``video_id, start, end`` [s] of unnarrated clips,
            the source of the OphCLIP silent-clip bank; extra columns are ignored).
        split: ``train``, ``val`` or ``test`` (from ``splits.json``), or an explicit list of video ids.
        fps: frame-folder rate.
        with_narrations: attach the narration hierarchy.
        with_labels: attach per-frame phase labels from the Cholec80 annotation files.
        skip_bad: count and drop bad narration rows instead of raising.
    """

    root: str | Path
    split: str | list[str] = "train"
    fps: float = 1.0
    with_narrations: bool = True
    with_labels: bool = True
    skip_bad: bool = False
    items: list[VideoItem] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        from vlp_surgical.annotations import labels_at, read_cholec80_phases

        root = Path(self.root)
        ids = self.split if isinstance(self.split, list) else json.loads((root / "splits.json").read_text())[self.split]
        narr = read_narrations(root / "narrations.csv", skip_bad=self.skip_bad) if self.with_narrations else None
        silent: dict[str, list[tuple[float, float]]] = {}
        if self.with_narrations and (root / "silent_clips.csv").is_file():
            import pandas as pd

            table = pd.read_csv(root / "silent_clips.csv", dtype={"video_id": str})
            for row in table.itertuples():
                silent.setdefault(str(row.video_id), []).append((float(row.start), float(row.end)))
        for vid in ids:
            ff = FrameFolder(root / "frames" / vid, fps=self.fps)
            frames, times = ff.read_at(np.arange(ff.n_frames) / self.fps)
            labels = None
            if self.with_labels:
                ann = read_cholec80_phases(root / "phase_annotations" / f"{vid}-phase.txt", sample_fps=None)
                labels = labels_at(ann, times)
            hier = narr.videos.get(vid) if narr is not None else None
            self.items.append(VideoItem(vid, torch.from_numpy(frames), hier, labels, silent.get(vid, [])))

    def __len__(self) -> int:
        return len(self.items)


def _span(start: float, end: float, fps: float, n: int) -> tuple[int, int]:
    a = min(int(np.floor(start * fps + 1e-6)), n - 1)
    b = max(a + 1, min(n, int(np.ceil(end * fps - 1e-6))))
    return a, b


def _paired(loss: MultiPositiveClipLoss, a: Tensor, b: Tensor) -> Tensor:
    """Symmetric InfoNCE of row-paired ``a [n, D]`` and ``b [n, D]`` (ClipLoss; exact under DDP with ragged n)."""
    return loss(a, b, torch.arange(a.shape[0], device=a.device))["loss"]


def _global_counts(*counts: int, device: torch.device) -> list[int]:
    """``counts`` summed over all ranks (one all-reduce); the local values when not distributed."""
    if dist_info()[1] == 1:
        return [int(c) for c in counts]
    t = torch.tensor(counts, dtype=torch.long, device=device)
    torch.distributed.all_reduce(t)
    return [int(c) for c in t.tolist()]


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine decay from the optimiser's learning rate to 0 over ``steps`` (both training engines)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))))


def build_batch(items: list[VideoItem], fps: float = 1.0) -> dict:
    """Concatenate frames and turn each video's hierarchy into frame-row segments and ordered texts."""
    frames, offset = [], 0
    clip_seg, clip_txt, phase_seg, phase_txt, phase_children = [], [], [], [], []
    video_seg, video_txt = [], []
    for it in items:
        n = it.frames.shape[0]
        frames.append(it.frames)
        h = it.hierarchy
        if h is None:
            raise ValueError(f"video {it.video_id} has no narrations")
        for ph in h.phases:
            a, b = _span(ph.start, ph.end, fps, n)
            phase_seg.append((offset + a, offset + b))
            phase_txt.append(ph.text)
            phase_children.append([c.text for c in ph.clips])
            for c in ph.clips:
                ca, cb = _span(c.start, c.end, fps, n)
                clip_seg.append((offset + ca, offset + cb))
                clip_txt.append(c.text)
        for c in h.orphan_clips:
            ca, cb = _span(c.start, c.end, fps, n)
            clip_seg.append((offset + ca, offset + cb))
            clip_txt.append(c.text)
        video_seg.append((offset, offset + n))
        video_txt.append(h.abstract or " ".join(p.text for p in h.phases))
        offset += n
    return {
        "frames": torch.cat(frames),
        "clip_segments": torch.tensor(clip_seg, dtype=torch.long).reshape(-1, 2),
        "clip_texts": clip_txt,
        "phase_segments": torch.tensor(phase_seg, dtype=torch.long).reshape(-1, 2),
        "phase_texts": phase_txt,
        "phase_children": phase_children,
        "video_segments": torch.tensor(video_seg, dtype=torch.long),
        "video_texts": video_txt,
        "video_n_phases": [len(it.hierarchy.phases) for it in items],
    }


def _pad_lists(embs: Tensor, counts: list[int]) -> tuple[Tensor, Tensor]:
    """Split ``embs [ΣN, D]`` into a padded ``[G, Nmax, D]`` by ``counts`` (order kept) and its mask."""
    nmax = max(max(counts), 1)
    out = embs.new_zeros(len(counts), nmax, embs.shape[-1])
    mask = torch.zeros(len(counts), nmax, dtype=torch.bool, device=embs.device)
    start = 0
    for g, c in enumerate(counts):
        out[g, :c] = embs[start : start + c]
        mask[g, :c] = True
        start += c
    return out, mask


class HecVLObjective(nn.Module):
    """Σ level InfoNCE (clip, phase, phase↔children, video) + ``dtw_weight`` · procedure DTW
    + ``ssl_weight`` · two-view visual self-supervision.

    Args:
        weights: per-term weights; keys ``clip``, ``phase``, ``phase_children``, ``video``.
        dtw_weight: weight of the PeskaVLP term (0 = HecVL only).
        dtw_levels: where the DTW term applies: ``video`` (frames ↔ phase summaries), ``phase`` (frames ↔ clips).
        dtw: the procedure loss.
        dtw_space: embedding space of the DTW terms. ``None`` (default): each term in its own level's space (``video``:
            frames ↔ phase summaries through the video projections; ``phase``: frames ↔ child narrations through the
            phase projections). A level name (e.g. ``"clip"``) runs both terms through that level's projections, so a
            clip-level-only model (``weights`` zero above the clip level) gets the DTW term in the space its clip
            InfoNCE trains and zero-shot uses — the demo's "clip-level InfoNCE alone vs + DTW" ablation.
        shuffle_pairs: control: pair every visual segment with a random other text of its level.
        ssl_weight: weight of the PeskaVLP visual self-supervision (0 = off): up to ``ssl_max_clips`` narrated clips
            of the batch get two random views each (:func:`vlp_surgical.augment.augment_frames`: resized crop,
            flip, colour jitter, one draw per clip), encoded, pooled and projected into the clip space like the clip
            level, and NT-Xent (:func:`vlp_surgical.losses.nt_xent`) pulls the two views of a clip together.
        ssl_temperature: NT-Xent temperature (0.1 as in the reference ``SIMCLRLoss``).
        ssl_max_clips: clips per step that get views (bounds the extra frame encodings).
        ssl_scale: crop area range of the views.
        retrieval_weight: weight of the OphCLIP term (0 = off): clip narration ↔ clip InfoNCE where each narration's
            top-``retrieval_k`` silent clips (exact inner product against a :class:`SilentClipBank`, queried with
            the narration's own clip embedding) are extra positives of weight ``bank_weight``. The bank holds the
            clip-space embeddings of the corpus's unnarrated clips and is re-encoded every ``refresh_every`` steps
            by :meth:`refresh_bank` (called by :func:`pretrain`).
        retrieval_k: silent neighbours per narration.
        bank_weight: weight of a retrieved positive (the paired clip has 1).
        refresh_every: steps between bank refreshes.
        seed: seeds the pair shuffling of the control and the view sampling.
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        dtw_weight: float = 1.0,
        dtw_levels: tuple[str, ...] = ("video", "phase"),
        dtw: ProcedureDTWLoss | None = None,
        dtw_space: str | None = None,
        shuffle_pairs: bool = False,
        seed: int = 0,
        ssl_weight: float = 0.0,
        ssl_temperature: float = 0.1,
        ssl_max_clips: int = 16,
        ssl_scale: tuple[float, float] = (0.3, 1.0),
        retrieval_weight: float = 0.0,
        retrieval_k: int = 2,
        bank_weight: float = 0.5,
        refresh_every: int = 10,
    ) -> None:
        super().__init__()
        self.retrieval_weight, self.bank_weight = retrieval_weight, bank_weight
        self.bank = SilentClipBank(1, k=retrieval_k, refresh_every=refresh_every)
        self.retrieval_loss = MultiPositiveClipLoss()
        self.ssl_weight, self.ssl_temperature, self.ssl_max_clips = ssl_weight, ssl_temperature, ssl_max_clips
        self.ssl_scale = tuple(ssl_scale)
        self.view_generator = torch.Generator().manual_seed(seed + 7919)
        self.weights = {"clip": 1.0, "phase": 1.0, "phase_children": 0.5, "video": 0.5, **(weights or {})}
        # MultiPositiveClipLoss with one positive per row is ClipLoss, but exact under DDP with ragged batches (ranks
        # hold different numbers of clips / phases / videos).
        self.clip_losses = nn.ModuleDict({k: MultiPositiveClipLoss() for k in self.weights})
        self.dtw_weight, self.dtw_levels = dtw_weight, tuple(dtw_levels)
        if dtw_space is not None and dtw_space not in HecVL.levels:
            raise ValueError(f"dtw_space must be None or one of {HecVL.levels}, got {dtw_space!r}")
        self.dtw_space = dtw_space
        self.dtw = dtw or ProcedureDTWLoss()
        self.shuffle_pairs = shuffle_pairs
        self.generator = torch.Generator().manual_seed(seed)

    def _texts(self, texts: list[str]) -> list[str]:
        if not self.shuffle_pairs or len(texts) < 2:
            return texts
        perm = torch.randperm(len(texts), generator=self.generator).tolist()
        return [texts[p] for p in perm]

    @torch.no_grad()
    def refresh_bank(self, model: HecVL, items: list[VideoItem], step: int, fps: float = 1.0,
                     batch_size: int = 256) -> int:  # fmt: skip
        """Re-encode every silent clip of ``items`` into the clip space and store it in the bank; returns its size.

        Runs in the model's current mode without side effects: batch-norm running statistics are restored after.
        """
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        embs = []
        for it in items:
            if not it.silent:
                continue
            n = it.frames.shape[0]
            seg = torch.tensor([_span(a, b, fps, n) for a, b in it.silent], dtype=torch.long)
            feats = torch.cat([model.encode_frames(it.frames[i : i + batch_size]) for i in range(0, n, batch_size)])
            pooled, _, _ = model.pool_segments(feats, seg.to(feats.device))
            embs.append(model.vis_proj["clip"](pooled))
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
        if embs:
            self.bank.refresh(torch.cat(embs), step)
        return int(self.bank.bank.shape[0])

    def clamp_parameters(self) -> None:
        """Keep every loss temperature in range (call after each optimiser step)."""
        for loss in [*self.clip_losses.values(), self.retrieval_loss]:
            loss.clamp_parameters()

    def visual_ssl(self, model: HecVL, batch: dict, n_global: int | None = None) -> Tensor | None:
        """NT-Xent between two augmented views of (up to ``ssl_max_clips``) clips; ``None`` with fewer than 2 clips
        (on all ranks together: ``n_global``, default this batch's count)."""
        seg = batch["clip_segments"]
        if (seg.shape[0] if n_global is None else n_global) < 2:
            return None
        if seg.shape[0] == 0:  # another rank has clips: join its gather with no views of our own
            return nt_xent(
                *(model.vis_proj["clip"].weight.new_zeros(0, model.config["embed_dim"]),) * 2, self.ssl_temperature
            )
        pick = torch.randperm(seg.shape[0], generator=self.view_generator)[: self.ssl_max_clips].sort().values
        seg = seg[pick]
        lengths = (seg[:, 1] - seg[:, 0]).clamp_min(1)
        rows = torch.cat([torch.arange(int(a), int(a) + int(n)) for a, n in zip(seg[:, 0], lengths)])
        groups = torch.repeat_interleave(torch.arange(seg.shape[0]), lengths)
        frames = batch["frames"][rows]
        x = frames.permute(0, 3, 1, 2).float() / 255.0 if frames.dtype == torch.uint8 else frames
        x = x.to(model.mean.device)
        ends = torch.cumsum(lengths, 0)
        local = torch.stack((ends - lengths, ends), 1).to(x.device)
        views = []
        for _ in range(2):
            v = augment_frames(x, self.view_generator, groups, size=model.img_size, scale=self.ssl_scale)
            pooled, _, _ = model.pool_segments(model.encode_frames(v), local)
            views.append(model.vis_proj["clip"](pooled))
        return nt_xent(views[0], views[1], self.ssl_temperature)

    def forward(self, model: HecVL, batch: dict) -> dict[str, Tensor]:
        feats = model.encode_frames(batch["frames"])
        out: dict[str, Tensor] = {}
        total = feats.new_zeros(())
        # Clip level.
        clip_pool, _, _ = model.pool_segments(feats, batch["clip_segments"])
        clip_txt = model.encode_text(self._texts(batch["clip_texts"]), "clip")
        clip_vis = model.vis_proj["clip"](clip_pool)
        children = batch["phase_children"]
        counts = [len(c) for c in children]
        has = torch.tensor([c > 0 for c in counts])
        video_pool, video_frames, video_mask = model.pool_segments(feats, batch["video_segments"])
        # Every "enough rows?" decision uses counts over all ranks, so under DDP every rank runs the same collectives.
        g_clips, g_parents, g_videos, g_children = _global_counts(
            clip_vis.shape[0], int(has.sum()), video_pool.shape[0], sum(counts), device=feats.device
        )
        out["clip"] = _paired(self.clip_losses["clip"], clip_vis, clip_txt)
        if self.retrieval_weight > 0 and self.bank.bank.shape[0] > 0 and g_clips >= 2:
            r = retrieval_positives(clip_txt, clip_vis, self.bank, self.retrieval_loss, self.bank_weight)
            out["clip_retrieval"], out["retrieved_sim"] = r["loss"], r["retrieved_sim"]
        # Phase level: phase ↔ summary, and phase ↔ mean of its children's narrations.
        phase_pool, phase_frames, phase_mask = model.pool_segments(feats, batch["phase_segments"])
        phase_vis = model.vis_proj["phase"](phase_pool)
        out["phase"] = _paired(self.clip_losses["phase"], phase_vis,
                               model.encode_text(self._texts(batch["phase_texts"]), "phase"))  # fmt: skip
        child_texts = self._texts([t for c in children for t in c])
        child_emb = (
            model.encode_text(child_texts, "phase")
            if sum(counts)
            else phase_vis.new_zeros(0, model.config["embed_dim"])
        )
        if g_parents >= 2:
            padded, cmask = _pad_lists(child_emb, counts)
            mean_child = (padded * cmask[..., None]).sum(1) / cmask.sum(1, keepdim=True).clamp_min(1)
            out["phase_children"] = _paired(self.clip_losses["phase_children"], phase_vis[has], mean_child[has])
        # Video level.
        if g_videos >= 2:
            out["video"] = _paired(self.clip_losses["video"], model.vis_proj["video"](video_pool),
                                   model.encode_text(self._texts(batch["video_texts"]), "video"))  # fmt: skip
        if self.ssl_weight > 0:
            ssl = self.visual_ssl(model, batch, g_clips)
            if ssl is not None:
                out["ssl"] = ssl
        extra = {"ssl": self.ssl_weight, "clip_retrieval": self.retrieval_weight, "retrieved_sim": 0.0}
        for k, v in out.items():
            total = total + extra.get(k, self.weights.get(k, 0.0)) * v
        # PeskaVLP procedure alignment.
        if self.dtw_weight > 0:
            dtw_terms = []
            space = self.dtw_space or "video"
            if "video" in self.dtw_levels:
                steps = model.encode_text(self._texts(batch["phase_texts"]), space)
                texts, tmask = _pad_lists(steps, batch["video_n_phases"])
                r = self.dtw(model.vis_proj[space](video_frames), video_mask, texts, tmask)
                out["dtw_video"], out["dtw_video_gap"] = r["loss"], r["dtw_gap"]
                dtw_terms.append(r["loss"])
            if "phase" in self.dtw_levels and g_children > 0:
                space = self.dtw_space or "phase"
                emb = child_emb if space == "phase" or not child_texts else model.encode_text(child_texts, space)
                texts, tmask = _pad_lists(emb, counts)
                r = self.dtw(model.vis_proj[space](phase_frames), phase_mask, texts, tmask)
                out["dtw_phase"], out["dtw_phase_gap"] = r["loss"], r["dtw_gap"]
                dtw_terms.append(r["loss"])
            if dtw_terms:
                total = total + self.dtw_weight * torch.stack(dtw_terms).mean()
        out["loss"] = total
        return out


def _generators(objective: HecVLObjective) -> dict[str, torch.Generator]:
    """Every seeded generator the objective draws from (pair shuffling, DTW negatives, views)."""
    gens = {}
    for name, mod in objective.named_modules():
        for attr, val in vars(mod).items():
            if isinstance(val, torch.Generator):
                gens[f"{name}.{attr}"] = val
    return gens


def _trainable_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("text.encoder.")}


def pretrain(
    model: HecVL,
    corpus: ProcedureCorpus,
    objective: HecVLObjective,
    steps: int = 100,
    videos_per_batch: int = 4,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: bool = False,
    log_every: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    stop_after: int | None = None,
) -> list[dict[str, float]]:
    """A small seeded AdamW loop (cosine schedule) over random groups of whole videos, with exact resume.

    Args:
        checkpoint: file for the training state (model weights without the frozen text encoder, objective, optimiser,
            schedule, step, data order, every random generator, the silent-clip bank and the history).
        checkpoint_every: write ``checkpoint`` every this many steps (and after the last step run); 0 = only at the end.
        resume: continue from ``checkpoint`` when it exists: the continued run gives the same weights and history as
            an uninterrupted one (tested).
        stop_after: stop once this many steps in total are done (a time-limited job; resume later). The schedule
            still spans ``steps``.

    Returns:
        Per-step logged scalars (of the whole run, including resumed steps).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = cosine_schedule(opt, steps)
    model.train()
    history: list[dict[str, float]] = []
    order: list[int] = []
    start = 0
    gens = _generators(objective)
    ckpt = Path(checkpoint) if checkpoint else None
    if resume and ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state["steps"] != steps or state["n_videos"] != len(corpus):
            raise ValueError(f"{ckpt}: written for steps={state['steps']} over {state['n_videos']} videos, "
                             f"not steps={steps} over {len(corpus)}")  # fmt: skip
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected or [k for k in missing if not k.startswith("text.encoder.")]:
            raise ValueError(f"{ckpt}: model weights do not match (missing {missing}, unexpected {unexpected})")
        objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, order, history = state["step"], list(state["order"]), list(state["history"])
        rng.setstate(_to_tuple(state["python_rng"]))
        torch.set_rng_state(state["torch_rng"])
        for name, g in gens.items():
            g.set_state(state["generators"][name])
        objective.bank.bank, objective.bank.last_refresh = state["bank"], state["bank_last_refresh"]

    def save(step: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        state = {"model": _trainable_state(model), "objective": objective.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "step": step, "steps": steps, "n_videos": len(corpus),
                 "order": order, "history": history, "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                 "generators": {k: g.get_state() for k, g in gens.items()}, "bank": objective.bank.bank.detach(),
                 "bank_last_refresh": objective.bank.last_refresh}  # fmt: skip
        tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt)  # atomic: an interrupted save never leaves a broken checkpoint

    end = steps if stop_after is None else min(steps, stop_after)
    for step in tqdm(range(start, end), desc="pretraining", disable=not progress, initial=start, total=steps):
        if len(order) < videos_per_batch:
            perm = list(range(len(corpus)))
            rng.shuffle(perm)
            order += perm
        chosen, order = order[:videos_per_batch], order[videos_per_batch:]
        if objective.retrieval_weight > 0 and objective.bank.due(step):
            objective.refresh_bank(model, corpus.items, step, corpus.fps)
        batch = build_batch([corpus.items[i] for i in chosen], corpus.fps)
        out = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        objective.clamp_parameters()
        history.append({k: float(v.detach()) for k, v in out.items()})
        if log_every and step % log_every == 0:
            print(step, {k: round(v, 3) for k, v in history[-1].items()})
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < end:
            save(step + 1)
    save(max(end, start))
    model.eval()
    return history


def _to_tuple(x):
    """``random.Random.setstate`` wants tuples; a weights-only checkpoint may hand back lists."""
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x
