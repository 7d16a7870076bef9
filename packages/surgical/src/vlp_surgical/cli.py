"""``vlp-surgical``: ``fit`` (hierarchical pretraining from a YAML config), ``zeroshot`` (phase recognition),
``generate`` (synthetic procedures) and ``demo``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["demo", "fit", "generate", "main", "zeroshot"]


def generate(root: str, n_train: int = 16, n_val: int = 4, n_test: int = 8, seed: int = 0,
             silent_fraction: float = 0.25) -> str:  # fmt: skip
    """Write a synthetic Cholec80-format procedure corpus (MP4s, frame folders, annotations, narrations).

    Args:
        root: output folder.
        n_train: training videos.
        n_val: validation videos.
        n_test: test videos.
        seed: seed.
        silent_fraction: share of clip narrations left out (written to silent_clips.csv as unnarrated clips).
    """
    from vlp_surgical.synth import make_procedures

    path = make_procedures(root, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, progress=True,
                           silent_fraction=silent_fraction)  # fmt: skip
    print(f"wrote procedures to {path}")
    return str(path)


def fit(
    root: str | None = None,
    out: str = "runs/surgical-fit",
    split: str = "train",
    generate_if_missing: bool = False,
    steps: int = 30,
    videos_per_batch: int = 4,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    backbone: str = "test_resnet",
    img_size: int = 32,
    frame_dim: int = 128,
    embed_dim: int = 128,
    temporal: str = "mean",
    text_model_path: str | None = None,
    dtw_weight: float = 1.0,
    dtw_levels: list[str] = ["video", "phase"],  # noqa: B006 - jsonargparse needs a literal default
    dtw_axis: str = "text",
    dtw_relaxation: str = "prob",
    dtw_gamma: float = 0.1,
    dtw_margin: float = 0.1,
    dtw_negatives: list[str] = ["reverse", "shuffle"],  # noqa: B006
    ssl_weight: float = 0.0,
    ssl_temperature: float = 0.1,
    ssl_max_clips: int = 16,
    retrieval_weight: float = 0.0,
    retrieval_k: int = 2,
    bank_weight: float = 0.5,
    refresh_every: int = 10,
    checkpoint_every: int = 0,
    resume: bool = False,
    skip_bad: bool = False,
    engine: str = "loop",
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
) -> str:
    """Pretrain HecVL (+ PeskaVLP DTW) on a corpus root and save it with save_pretrained.

    Args:
        root: corpus folder (frames/<vid>/, narrations.csv, phase_annotations/, splits.json).
        out: output folder (model.safetensors, config.json, history.json).
        split: split of splits.json to train on.
        generate_if_missing: write the synthetic corpus to root first when it has no narrations.csv.
        steps: optimiser steps.
        videos_per_batch: whole videos per batch.
        lr: peak AdamW learning rate (cosine decay).
        weight_decay: AdamW weight decay.
        seed: seed.
        backbone: timm frame encoder.
        img_size: frame size fed to the encoder.
        frame_dim: frame feature width.
        embed_dim: joint space width per level.
        temporal: temporal aggregation: mean or transformer.
        text_model_path: local Hugging Face text model (default: packaged MiniLM).
        dtw_weight: weight of the procedure DTW term (0 = HecVL only).
        dtw_levels: levels with a DTW term: video, phase.
        dtw_axis: cost normalisation axis: text (paper), frame (released code) or none.
        dtw_relaxation: prob (PeskaVLP) or logsumexp.
        dtw_gamma: soft-DTW smoothing.
        dtw_margin: hinge margin.
        dtw_negatives: reverse, shuffle, local.
        ssl_weight: weight of the two-view visual self-supervision (NT-Xent between augmented views of clips; 0 = off).
        ssl_temperature: NT-Xent temperature.
        ssl_max_clips: clips per step that get two views.
        retrieval_weight: weight of the OphCLIP term (silent clips retrieved from the bank as extra positives; 0 = off;
            needs silent_clips.csv in the root).
        retrieval_k: silent neighbours per narration.
        bank_weight: weight of a retrieved positive (the paired clip has 1).
        refresh_every: steps between re-encodings of the silent-clip bank.
        checkpoint_every: write <out>/checkpoint.pt (full training state) every this many steps; 0 = at the end only.
        resume: continue from <out>/checkpoint.pt when it exists (same weights and history as an uninterrupted run).
        skip_bad: count and skip bad narration rows.
        engine: ``loop`` — the small single-process loop (CPU work, the demo); ``lightning`` — Lightning's Trainer
            (GPUs, DDP on ``devices`` × ``num_nodes``, mixed precision; checkpoints ``<out>/checkpoints/last.ckpt``).
            The objective is exact under DDP, so N devices train on a global batch of N × ``videos_per_batch``.
        accelerator / devices / num_nodes / strategy / precision: Lightning Trainer settings (``engine=lightning``).
            ``strategy=auto`` with more than one device means ``ddp_find_unused_parameters_true``.
    """
    from vlp_surgical.losses import ProcedureDTWLoss
    from vlp_surgical.models import HecVL
    from vlp_surgical.training import HecVLObjective, ProcedureCorpus, pretrain

    if not root:
        raise SystemExit("vlp-surgical fit: --root (corpus folder) is required")

    if generate_if_missing and not (Path(root) / "narrations.csv").is_file():
        generate(root, seed=seed)
    corpus = ProcedureCorpus(root, split, with_labels=False, skip_bad=skip_bad)
    import torch

    torch.manual_seed(seed)
    model = HecVL(backbone, frame_dim, embed_dim, temporal, img_size, text_model_path)
    dtw = ProcedureDTWLoss(gamma=dtw_gamma, relaxation=dtw_relaxation, axis=dtw_axis,  # type: ignore[arg-type]
                           negatives=tuple(dtw_negatives), margin=dtw_margin, seed=seed)  # fmt: skip
    objective = HecVLObjective(dtw_weight=dtw_weight, dtw_levels=tuple(dtw_levels), dtw=dtw, seed=seed,
                               ssl_weight=ssl_weight, ssl_temperature=ssl_temperature,
                               ssl_max_clips=ssl_max_clips, retrieval_weight=retrieval_weight,
                               retrieval_k=retrieval_k, bank_weight=bank_weight,
                               refresh_every=refresh_every)  # fmt: skip
    if engine == "lightning":
        history = _fit_lightning(model, objective, corpus, out, steps, videos_per_batch, lr, weight_decay, seed,
                                 checkpoint_every, resume, accelerator, devices, num_nodes, strategy, precision)  # fmt: skip
        if history is None:  # not the global-zero rank: rank 0 writes the model
            return out
    elif engine == "loop":
        history = pretrain(model, corpus, objective, steps=steps, videos_per_batch=videos_per_batch, lr=lr,
                           weight_decay=weight_decay, seed=seed, progress=True, checkpoint=Path(out) / "checkpoint.pt",
                           checkpoint_every=checkpoint_every, resume=resume)  # fmt: skip
    else:
        raise SystemExit(f"vlp-surgical fit: --engine must be loop or lightning, got {engine!r}")
    model.save_pretrained(out)
    (Path(out) / "history.json").write_text(json.dumps(history))
    print(f"final loss {history[-1]['loss']:.4f}; saved to {out}")
    return out


def _fit_lightning(model, objective, corpus, out, steps, videos_per_batch, lr, weight_decay, seed, checkpoint_every,
                   resume, accelerator, devices, num_nodes, strategy, precision) -> list[dict[str, float]] | None:  # fmt: skip
    """Train with Lightning's Trainer; returns the logged history on global rank 0, ``None`` on other ranks."""
    import lightning as L

    from vlp_surgical.lightning import HecVLModule, VideoDataModule

    class _History(L.Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            logged = trainer.callback_metrics
            self.rows.append({k.removeprefix("train/"): float(v) for k, v in logged.items() if k.startswith("train/")})

    L.seed_everything(seed, workers=True, verbose=False)
    ckpt_dir = Path(out) / "checkpoints"
    every = checkpoint_every or steps
    checkpointing = L.pytorch.callbacks.ModelCheckpoint(ckpt_dir, every_n_train_steps=every, save_last=True,
                                                        save_top_k=0)  # fmt: skip
    if strategy == "auto" and devices * num_nodes > 1:
        strategy = "ddp_find_unused_parameters_true"
    history = _History()
    trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                        precision=precision, max_steps=steps, use_distributed_sampler=False, gradient_clip_val=5.0,
                        logger=False, callbacks=[checkpointing, history], default_root_dir=out,
                        enable_model_summary=False, log_every_n_steps=1)  # fmt: skip
    module = HecVLModule(model, objective, bank_items=corpus.items, lr=lr, weight_decay=weight_decay, steps=steps,
                         fps=corpus.fps, seed=seed)  # fmt: skip
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, VideoDataModule(corpus.items, videos_per_batch, corpus.fps, seed),
                ckpt_path=str(last) if resume and last.is_file() else None)  # fmt: skip
    model.eval()
    return history.rows if trainer.is_global_zero else None


def _eval_items(
    dataset: str, root: str, split: str, fps: float, source: str, narrations: str | None = None, backend: str = "pyav"
) -> list[Any]:
    import numpy as np
    import torch

    from vlp_surgical.annotations import (
        autolaparo_split,
        cholec80_split,
        labels_at,
        read_autolaparo_phases,
        read_cholec80_phases,
    )
    from vlp_surgical.training import VideoItem
    from vlp_surgical.video import FrameFolder, read_video

    r = Path(root)
    if (r / "splits.json").is_file():
        ids = json.loads((r / "splits.json").read_text())[split]
    else:
        ids = cholec80_split(split) if dataset == "cholec80" else autolaparo_split(split)
    hier = {}
    if narrations:
        from vlp_surgical.narration import read_narrations

        hier = read_narrations(narrations).videos
    items = []
    for vid in ids:
        if source == "frames":
            ff = FrameFolder(r / "frames" / vid, fps=fps)
            frames, times = ff.read_at(np.arange(ff.n_frames) / fps)
        else:
            frames, times = read_video(r / "videos" / f"{vid}.mp4", fps=fps, backend=backend)
        if dataset == "cholec80":
            ann = read_cholec80_phases(r / "phase_annotations" / f"{vid}-phase.txt", sample_fps=None)
        else:
            ann = read_autolaparo_phases(r / "labels" / f"label_{vid}.txt")
        items.append(VideoItem(vid, torch.from_numpy(frames), hier.get(vid), labels_at(ann, times)))
    return items


def zeroshot(
    ckpt: str | None = None,
    root: str | None = None,
    dataset: str = "cholec80",
    split: str = "test",
    fps: float = 1.0,
    source: str = "video",
    prompt_ensemble: bool = False,
    smoothing: int = 0,
    retrieval: bool = True,
    narrations: str | None = None,
    video_backend: str = "pyav",
    out: str = "zeroshot_results",
) -> list[dict]:
    """Zero-shot phase recognition (+ text<->video retrieval): prints the tables, writes zeroshot.csv/json,
    retrieval.csv and timeline.png; returns the zero-shot rows followed by the retrieval rows.

    Args:
        ckpt: folder written by fit (save_pretrained).
        root: dataset folder (videos/ or frames/, phase annotations).
        dataset: cholec80 or autolaparo.
        split: split (test = Cholec80 49-80, AutoLaparo 15-21; splits.json when present).
        fps: classified frames per second.
        source: video (MP4 through PyAV) or frames (frame folders at fps).
        prompt_ensemble: also report the prompt-ensemble row.
        smoothing: also report a row with this temporal smoothing window (frames).
        retrieval: also report text->video and video->text R@1/5/10 (clip<->narration, phase<->summary,
            video<->abstract) over the split's videos that have narrations (needs a narration table).
        narrations: narration table (CSV/Parquet) for retrieval; default <root>/narrations.csv when present.
        video_backend: pyav, torchcodec (optional extra + system FFmpeg) or auto (torchcodec when usable).
        out: output folder.
    """
    from vlp_surgical.annotations import AUTOLAPARO_PHASES, CHOLEC80_PHASES
    from vlp_surgical.eval import (
        ZeroShotProtocol,
        evaluate_retrieval,
        evaluate_zeroshot,
        format_retrieval_table,
        format_table,
        plot_timeline,
        write_results,
    )
    from vlp_surgical.models import HecVL

    if not ckpt or not root:
        raise SystemExit("vlp-surgical zeroshot: --ckpt (a fit output folder) and --root (dataset folder) are required")
    if dataset not in ("cholec80", "autolaparo"):
        raise SystemExit(f"vlp-surgical: unknown dataset {dataset!r}; choose cholec80 or autolaparo")
    model = HecVL.from_pretrained(ckpt).eval()
    phases = CHOLEC80_PHASES if dataset == "cholec80" else AUTOLAPARO_PHASES
    protocol = ZeroShotProtocol(dataset=dataset, split=split, fps=fps, img_size=model.img_size, phases=phases)
    narr = narrations or (str(Path(root) / "narrations.csv") if (Path(root) / "narrations.csv").is_file() else None)
    items = _eval_items(dataset, root, split, fps, source, narr if retrieval else None, video_backend)
    rows = []
    metrics, preds = evaluate_zeroshot(model, items, protocol)
    rows.append({"row": "zero-shot", **metrics})
    if prompt_ensemble:
        p = ZeroShotProtocol(**{**protocol.to_dict(), "prompt_ensemble": True})
        rows.append({"row": "zero-shot, prompt ensemble", **evaluate_zeroshot(model, items, p)[0]})
    if smoothing:
        p = ZeroShotProtocol(**{**protocol.to_dict(), "smoothing": smoothing})
        rows.append({"row": f"zero-shot, smoothing {smoothing}", **evaluate_zeroshot(model, items, p)[0]})
    print(format_table(rows))
    retrieval_rows = None
    if retrieval:
        narrated = [it for it in items if it.hierarchy is not None]
        if narrated:
            retrieval_rows = evaluate_retrieval(model, narrated, fps=fps)
            print(format_retrieval_table(retrieval_rows))
        else:
            print("retrieval: skipped (no narrations for the evaluated videos; pass --narrations)")
    paths = write_results(rows, out, "zeroshot", protocol, retrieval=retrieval_rows)
    paths.append(plot_timeline([it.video_id for it in items], [it.labels for it in items], preds, phases,
                               Path(out) / "timeline.png"))  # fmt: skip
    print(f"wrote {', '.join(map(str, paths))}")
    return rows + (retrieval_rows or [])


def demo(out: str = "runs/demo-surgical", data_dir: str | None = None, scale: str = "small", seed: int = 0) -> dict:
    """Run the embedded surgical demo (same as `vlp demo surgical`).

    Args:
        out: output folder for PNGs and results.
        data_dir: cache for the generated data (default: core's demo cache).
        scale: small or large.
        seed: seed.
    """
    from vlp_core.demo import DemoContext, default_cache_dir
    from vlp_surgical.demo import run_demo

    data = Path(data_dir) if data_dir else default_cache_dir() / "demo" / "surgical"
    ctx = DemoContext(Path(out), data, scale, seed)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    res = run_demo(ctx)
    print(json.dumps(res.metrics, indent=2))
    print("\n".join(res.notes))
    return res.metrics


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``vlp-surgical``."""
    from vlp_core.cli import domain_cli

    result = domain_cli(
        "vlp-surgical",
        commands={"fit": fit, "zeroshot": zeroshot, "generate": generate, "demo": demo},
        args=None if argv is None else list(argv),
    )
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
