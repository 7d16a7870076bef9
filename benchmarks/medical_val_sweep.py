"""Validation-split sweep of the medical demo's pretraining choices (never reads the test split).

Pretrains one demo variant per configuration on the phantom train split (same data, seed and evaluation suite as
``vlp demo medical``) and reports, on the ``validate`` split only: zero-shot macro AUROC for every prompt set of
:mod:`vlp_medical.prompts` (single and ensembled), ProbMed's uncertainty-vs-wrong-top-1 AUROC and the pretraining
seconds. One JSON line per configuration (appended to ``--out``).

    uv run python benchmarks/medical_val_sweep.py --data runs/medical-sweep/data --configs clip_base probmed_base
    uv run python benchmarks/medical_val_sweep.py --list
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

# name -> (method, pretrain kwargs, text tower kwargs beyond the demo's frozen MiniLM)
CONFIGS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "clip_base": ("clip", {}, {}),
    "probmed_atten0.5": ("probmed", {"attenuation_weight": 0.5}, {}),
    "probmed_atten2": ("probmed", {"attenuation_weight": 2.0}, {}),
    "probmed_logvar_lr10": (
        "probmed",
        {"lr_multipliers": {"towers.image.head.logvar": 10.0, "towers.text.head.logvar": 10.0}},
        {},
    ),
    "make_base": ("make", {}, {}),
    "probmed_base": ("probmed", {}, {}),
    "clip_steps200": ("clip", {"steps": 200}, {}),
    "clip_lr1e-3": ("clip", {"lr": 1e-3}, {}),
    "clip_mlp": ("clip", {}, {"proj": "mlp"}),
    "clip_unfreeze1": ("clip", {"lr_multipliers": {"towers.text.encoder": 0.05}}, {"unfreeze_last_n": 1}),
    "clip_unfreeze2": ("clip", {"lr_multipliers": {"towers.text.encoder": 0.05}}, {"unfreeze_last_n": 2}),
    "clip_96px": ("clip", {"image_size": 96}, {}),
    "clip_batch32": ("clip", {"batch_size": 32}, {}),
    "clip_steps300": ("clip", {"steps": 300}, {}),
    "make_steps300": ("make", {"steps": 300}, {}),
    "probmed_steps300": ("probmed", {"steps": 300}, {}),
    "clip_steps300_96px": ("clip", {"steps": 300, "image_size": 96}, {}),
    "probmed_steps300_lr1e-3": ("probmed", {"steps": 300, "lr": 1e-3}, {}),
    # The text projection locked at its random init (a near-isometry of the MiniLM space) or slowed down: the image
    # tower must meet the frozen sentence geometry, so paraphrases the reports never use stay close to them.
    "clip_textlock": ("clip", {"lr_multipliers": {"towers.text.proj": 0.0}}, {}),
    "clip_textlock_steps300": ("clip", {"steps": 300, "lr_multipliers": {"towers.text.proj": 0.0}}, {}),
    "clip_text0.1_steps300": ("clip", {"steps": 300, "lr_multipliers": {"towers.text.proj": 0.1}}, {}),
    # A sentence-level multi-positive term beside the report-level loss (build_model(sentence_weight=...)).
    "clip_sent0.5": ("clip", {"sentence_weight": 0.5}, {}),
    "clip_sent1": ("clip", {"sentence_weight": 1.0}, {}),
    "clip_sent2": ("clip", {"sentence_weight": 2.0}, {}),
    "probmed_sent1": ("probmed", {"sentence_weight": 1.0}, {}),
    "probmed_sent1_atten0.5": ("probmed", {"sentence_weight": 1.0, "attenuation_weight": 0.5}, {}),
    "probmed_sent1_atten2": ("probmed", {"sentence_weight": 1.0, "attenuation_weight": 2.0}, {}),
    "probmed_sent1_atten2_lv3": (
        "probmed",
        {
            "sentence_weight": 1.0,
            "attenuation_weight": 2.0,
            "lr_multipliers": {"towers.image.head.logvar": 3.0, "towers.text.head.logvar": 3.0},
        },
        {},
    ),
    # Attenuation difficulty over plausible matches (same finding labels), not the exact pair.
    "probmed_sent1_atten2_lab": (
        "probmed",
        {"sentence_weight": 1.0, "attenuation_weight": 2.0, "attenuation_partners": "labels"},
        {},
    ),
    "probmed_sent1_atten0.5_lab": (
        "probmed",
        {"sentence_weight": 1.0, "attenuation_weight": 0.5, "attenuation_partners": "labels"},
        {},
    ),
    "probmed_sent1_atten4_lab": (
        "probmed",
        {"sentence_weight": 1.0, "attenuation_weight": 4.0, "attenuation_partners": "labels"},
        {},
    ),
    "probmed_sent1_atten2_lab_lv3": (
        "probmed",
        {
            "sentence_weight": 1.0,
            "attenuation_weight": 2.0,
            "attenuation_partners": "labels",
            "lr_multipliers": {"towers.image.head.logvar": 3.0, "towers.text.head.logvar": 3.0},
        },
        {},
    ),
    # Reports embedded as the mean of their sentence embeddings (core TextTower(sentence_mean=True)).
    "clip_sentmean": ("clip", {}, {"sentence_mean": True}),
    "probmed_sentmean": ("probmed", {}, {"sentence_mean": True}),
    "make_sentmean": ("make", {}, {"sentence_mean": True}),
    "probmed_sentmean_sent1": ("probmed", {"sentence_weight": 1.0}, {"sentence_mean": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/medical-sweep/data")
    ap.add_argument("--configs", nargs="*", default=["clip_base"])
    ap.add_argument("--out", default="runs/medical-sweep/val_sweep.jsonl")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed (the phantom data keep seed 0)")
    ap.add_argument("--clean", action="store_true", help="phantom data without degraded images (the demo's, v1)")
    ap.add_argument("--degrade", type=float, default=0.2, help="fraction of degraded phantoms unless --clean")
    ap.add_argument("--text-cache", default="runs/medical-sweep/text_cache.pt", help="frozen MiniLM outputs, reused")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CONFIGS))
        return
    from vlp_medical.bench import load_index
    from vlp_medical.demo import (
        DEMO_SCALES,
        demo_suite,
        prepare_demo_data,
        pretrain,
        validation_metrics,
        warm_text_tower,
    )

    cfg = DEMO_SCALES["small"]
    torch.set_num_threads(args.threads)
    # --clean: the main demo table's phantoms; else --degrade of the films degraded (the uncertainty study: 0.1)
    root = prepare_demo_data(
        Path(args.data), cfg["n_images"], 0, False, degrade_fraction=0.0 if args.clean else args.degrade
    )
    index = load_index(demo_suite(root, cfg["image_size"]))
    cache = Path(args.text_cache)
    frozen = warm_text_tower(index, preload=torch.load(cache, weights_only=True) if cache.is_file() else None)
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(frozen._cache, cache)
    for name in args.configs:
        method, kw, text_kw = CONFIGS[name]
        run = {"steps": args.steps, "batch_size": cfg["batch_size"], "image_size": cfg["image_size"], **kw}
        text = frozen
        if text_kw:
            from vlp_core.towers import TextTower

            text = TextTower(embed_dim=128, max_length=96, freeze=True, **text_kw)
        t = time.perf_counter()
        model = pretrain(method, index, text, seed=args.seed, arch=cfg["arch"], **run)
        seconds = time.perf_counter() - t
        res = {"config": name, "method": method, "seed": args.seed, **{k: v for k, v in run.items()}, "text": text_kw,
               "pretrain_s": round(seconds, 1), **validation_metrics(model, index, run["image_size"])}  # fmt: skip
        print(json.dumps(res), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
