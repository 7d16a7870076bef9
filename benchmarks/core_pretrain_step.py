"""Benchmark: one pretraining step of vlp-core's Pretrainer under a Lightning Trainer vs a plain PyTorch loop.

Model: timm ViT-tiny image tower + trainable MiniLM text tower (both projected to 256), ClipLoss, AdamW with the
Pretrainer's parameter groups (``model.configure_optimizers()``). Both drivers train the very same module objects
on the same pre-collated synthetic batches (random 224 px images, fixed report-like strings):

* ``Pretrainer + Trainer``: ``Trainer(max_steps=warmup+steps, logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(model, loader)``;
* ``plain loop``: towers -> ClipLoss -> backward -> AdamW step -> LR-scheduler step -> zero_grad -> clamp the
  logit scale (the same work the Pretrainer does), with no Lightning in the loop.

Step time = wall time between the ends of consecutive steps (a Lightning callback / the loop itself), so it
includes data fetching and every hook; the first ``--warmup`` steps of each run are excluded. Runs alternate
(A B, B A, ...) ``--rounds`` times; medians of the per-step times are reported with their ratio.

Also reported: dense float32 matmul FLOP/s of this machine (2048^3 by default, same torch thread count), FLOPs
per training step (``torch.utils.flop_counter.FlopCounterMode`` over one forward+backward of the plain loop), and
the achieved FLOP/s as a fraction of the matmul rate.

    uv run python benchmarks/core_pretrain_step.py           # full run (< ~10 min)
    uv run python benchmarks/core_pretrain_step.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import env_line, fmt_ratio, markdown_table, median, repro_command  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

REPORTS = (
    "Sinus rhythm with first degree AV block. Left axis deviation. Nonspecific T wave abnormality in lateral leads.",
    "No acute cardiopulmonary process. Heart size is normal. Lungs are clear without effusion or pneumothorax.",
    "Atrial fibrillation with rapid ventricular response. Possible old inferior infarct. Abnormal ECG.",
    "Mild cardiomegaly with small bilateral pleural effusions and bibasilar atelectasis. No focal consolidation.",
    "Normal sinus rhythm. Normal ECG.",
    "Endotracheal tube terminates 4 cm above the carina. Right internal jugular line tip in the lower SVC.",
    "Sinus bradycardia with premature ventricular complexes. ST elevation in V1-V3, consider anterior injury.",
    "Patchy opacity in the right lower lobe concerning for pneumonia in the appropriate clinical setting.",
    "Left bundle branch block. Prolonged QT interval. Compared with the prior tracing, rate has increased.",
    "Stable postoperative appearance of the chest after median sternotomy and CABG. Mild pulmonary edema.",
)

PLAIN, LIGHTNING = "plain loop", "Pretrainer + Trainer"


class _Batches(Dataset):
    """``length`` pre-collated batches (served with ``batch_size=None``), cycling over a few distinct ones."""

    def __init__(self, batches: list[dict[str, Any]], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.batches[i % len(self.batches)]


def make_batches(batch: int, image_size: int, n_distinct: int, seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_distinct):
        texts = [REPORTS[(i + k) % len(REPORTS)] for i in range(batch)]
        out.append({"image": torch.randn(batch, 3, image_size, image_size, generator=g), "text": texts})
    return out


def build_model(max_steps: int) -> Any:
    from vlp_core.losses import ClipLoss
    from vlp_core.towers import ImageTower, TextTower
    from vlp_core.training.module import Pretrainer
    from vlp_core.training.terms import LossTerm

    towers = {
        "image": ImageTower("vit_tiny_patch16_224", embed_dim=256),
        "text": TextTower(embed_dim=256, freeze=False, cache_embeddings=False),
    }
    losses = [LossTerm("clip", ClipLoss(), inputs=("image", "text"))]
    return Pretrainer(towers, losses, max_steps=max_steps)


def plain_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Towers + loss, straight through the modules (no Pretrainer.compute_losses, no logging)."""
    img = model.towers["image"](batch["image"]).embedding
    txt = model.towers["text"](batch["text"]).embedding
    return model.losses[0].loss(img, txt)["loss"]


def run_plain(model: Any, loader: DataLoader) -> list[float]:
    cfg = model.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    model.train()
    stamps = [time.perf_counter()]
    for batch in loader:
        loss = plain_loss(model, batch)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        model.clamp_parameters()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_lightning(model: Any, loader: DataLoader, n_steps: int) -> list[float]:
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.stamps.append(time.perf_counter())

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.stamps.append(time.perf_counter())

    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=n_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    s = timer.stamps
    return [b - a for a, b in zip(s, s[1:])]


def run_step_interleaved(model: Any, loader: DataLoader, batches: list[dict[str, Any]], n_steps: int) -> dict:
    """One Trainer.fit; after every Lightning step a callback runs one plain-loop step (A B A B ... per step).

    Lightning step i = end of plain step i-1 -> end of Lightning step i (so it carries all of Lightning's
    inter-step work); plain step i = end of Lightning step i -> end of plain step i. The plain step uses its own
    AdamW (same groups, from ``model.configure_optimizers()``) on the very same modules.
    """
    import lightning as L

    class Interleave(L.Callback):
        def __init__(self) -> None:
            self.light: list[float] = []
            self.plain: list[float] = []
            self.last = 0.0
            self.i = 0

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            cfg = model.configure_optimizers()
            self.opt, self.sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
            self.last = time.perf_counter()

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            self.light.append(t - self.last)
            plain_loss(model, batches[self.i % len(batches)]).backward()
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            model.clamp_parameters()
            self.i += 1
            self.last = time.perf_counter()
            self.plain.append(self.last - t)

    cb = Interleave()
    trainer = L.Trainer(
        max_steps=n_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=0,
        callbacks=[cb],
    )
    trainer.fit(model, train_dataloaders=loader)
    return {LIGHTNING: cb.light, PLAIN: cb.plain}


def matmul_flops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / median(ts)


def count_flops(model: Any, batch: dict[str, Any]) -> tuple[float, list[tuple[str, float]]]:
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        plain_loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    per_op = fc.get_flop_counts().get("Global", {})
    top = sorted(((str(k), float(v)) for k, v in per_op.items()), key=lambda kv: -kv[1])
    return float(fc.get_total_flops()), top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=4, help="timed steps per driver (per run)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every run")
    p.add_argument("--rounds", type=int, default=2, help="--mode runs: alternating (Lightning, plain) run pairs")
    p.add_argument(
        "--mode",
        choices=("steps", "runs"),
        default="steps",
        help="steps: one fit, a plain step after every Lightning step (ABAB per step, robust to load swings); "
        "runs: alternate whole runs (separate Trainer.fit / plain loop)",
    )
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--matmul-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: batch 8, 1 warm-up + 2 timed steps, 1 round")
    args = p.parse_args()
    if args.quick:
        args.batch, args.steps, args.warmup, args.rounds, args.matmul_repeats = 8, 2, 1, 1, 3
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the first step pays optimizer-state allocation)")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    torch.manual_seed(args.seed)
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    mm_before = matmul_flops(args.matmul_size, args.matmul_repeats)

    n_steps = args.warmup + args.steps
    model = build_model(max_steps=10_000)
    batches = make_batches(args.batch, args.image_size, 2, args.seed)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = model.towers["text"].tokenize(batches[0]["text"])["input_ids"].shape
    flops, top_ops = count_flops(model, batches[0])

    def loader() -> DataLoader:
        return DataLoader(_Batches(batches, n_steps), batch_size=None, shuffle=False, num_workers=0)

    steps: dict[str, list[float]] = {LIGHTNING: [], PLAIN: []}
    per_round: dict[str, list[float]] = {LIGHTNING: [], PLAIN: []}
    if args.mode == "steps":
        args.rounds = 1
        ts_all = run_step_interleaved(model, loader(), batches, n_steps)
        for name, ts in ts_all.items():
            if len(ts) != n_steps:
                raise RuntimeError(f"{name}: expected {n_steps} steps, timed {len(ts)}")
            steps[name] += ts[args.warmup :]
            per_round[name].append(median(ts[args.warmup :]))
            print(f"  {name}: " + ", ".join(f"{t:.2f}" for t in ts) + " s/step", file=sys.stderr)
        pair_ratios = [a / b for a, b in zip(steps[LIGHTNING], steps[PLAIN])]
    for r in range(args.rounds if args.mode == "runs" else 0):
        order = [LIGHTNING, PLAIN] if r % 2 == 0 else [PLAIN, LIGHTNING]
        for name in order:
            ts = run_lightning(model, loader(), n_steps) if name == LIGHTNING else run_plain(model, loader())
            if len(ts) != n_steps:
                raise RuntimeError(f"{name}: expected {n_steps} steps, timed {len(ts)}")
            if torch.get_num_threads() != threads:
                print(f"warning: torch threads changed to {torch.get_num_threads()} after {name}", file=sys.stderr)
                torch.set_num_threads(threads)
            timed = ts[args.warmup :]
            steps[name] += timed
            per_round[name].append(median(timed))
            print(f"  round {r} {name}: " + ", ".join(f"{t:.2f}" for t in ts) + " s/step", file=sys.stderr)
    mm_after = matmul_flops(args.matmul_size, args.matmul_repeats)
    mm = median([mm_before, mm_after])
    t_total = time.perf_counter() - t_start

    ref = median(steps[PLAIN])
    if args.mode == "runs":
        pair_ratios = [a / b for a, b in zip(per_round[LIGHTNING], per_round[PLAIN])]
    rows = []
    for name in (PLAIN, LIGHTNING):
        t = median(steps[name])
        rows.append(
            [
                name,
                len(steps[name]),
                f"{t:.2f}",
                f"{min(steps[name]):.2f}",
                f"{args.batch / t:.1f}",
                fmt_ratio(t / ref),
                f"{flops / t / 1e9:.1f}",
                f"{flops / t / mm:.0%}",
            ]
        )

    print("# Pretraining step: Pretrainer + Lightning Trainer vs plain PyTorch loop (CPU, float32)\n")
    print(f"- {env_line()}")
    print(
        f"- model: ViT-tiny/16 @ {args.image_size} px + MiniLM-L6 (trainable), embed 256, ClipLoss, AdamW; "
        f"{n_params / 1e6:.1f} M trainable params; batch {args.batch}, text tokens {tuple(tokens)}"
    )
    if args.mode == "steps":
        print(f"- one fit, steps interleaved L P L P ...: {args.warmup} warm-up + {args.steps} timed steps per driver")
    else:
        print(f"- {args.rounds} alternating rounds × ({args.warmup} warm-up + {args.steps} timed steps) per driver")
    print(f"- reproduce: `{repro_command()}`\n")
    print(
        markdown_table(
            [
                "driver",
                "timed steps",
                "median s/step",
                "min s/step",
                "samples/s",
                "time / plain",
                "achieved GFLOP/s",
                "of matmul peak",
            ],
            rows,
        )
    )
    print()
    overhead = median(steps[LIGHTNING]) / ref - 1
    print(
        markdown_table(
            ["quantity", "value"],
            [
                ["Pretrainer overhead vs plain (ratio of medians - 1)", f"{overhead:+.1%}"],
                [
                    "per-step ratios Lightning/plain (adjacent steps)"
                    if args.mode == "steps"
                    else "per-round ratios (Lightning / plain medians)",
                    ", ".join(f"{x:.3f}" for x in pair_ratios) + f" (median {median(pair_ratios):.3f})",
                ],
                [
                    f"matmul {args.matmul_size}³ f32 GFLOP/s (before / after / median)",
                    f"{mm_before / 1e9:.1f} / {mm_after / 1e9:.1f} / {mm / 1e9:.1f}",
                ],
                ["FLOPs per training step (fwd+bwd, FlopCounterMode)", f"{flops / 1e9:.1f} GFLOP"],
                [
                    "largest ops (GFLOP)",
                    ", ".join(f"{k.removeprefix('aten.')} {v / 1e9:.0f}" for k, v in top_ops[:5]),
                ],
                ["wall time of this run", f"{t_total:.0f} s"],
            ],
        )
    )
    print(
        "\nStep time = interval between ends of consecutive optimiser steps (includes data fetch and all hooks); "
        "FlopCounterMode counts matmul/conv/attention FLOPs only (not AdamW, norms, GELU, softmax)."
    )


if __name__ == "__main__":
    main()
