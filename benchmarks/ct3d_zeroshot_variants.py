"""Zero-shot CLIP variants at demo scale, selected on a validation split of the TRAINING phantoms only.

The demo's training phantoms (400, seed 0) are split by patient (patient id % 5 == 0 → validation, the same
patient-level part the demo uses to choose the linear probe's decay); each variant trains on the rest and is scored
by zero-shot macro AUROC on the validation part with the class-name prompt pairs and the disjoint wording. The
demo's held-out (``valid``) phantoms are never read.

    uv run python benchmarks/ct3d_zeroshot_variants.py --variants baseline text_mlp

Each result also records the diagonals of :func:`vlp_ct3d.eval.zeroshot_alignment` on the validation part (the
cosine between a class's prompt-pair direction, its training-report direction and its validation-volume direction);
``--alignment`` prints the full matrices.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402

# name → (build_ct_clip kwargs, VolumeTextSet kwargs, steps[, batch]); the batch defaults to the demo's. Variants
# before the fourth round ran with attention pooling, then the default (rounds in the vlp-ct3d README).
BASE = {"embed_dim": 128, "widths": (16, 32, 64), "lr": 2e-3}


def _pyramid(
    steps: int, detectors: int = 0, noise: float = 0.0, widths: tuple[int, ...] | None = None
) -> tuple[dict, dict, int]:
    """MLP text head + pyramid pooling (eighth round), with noise on MiniLM's embeddings (ninth round)."""
    kw = {"text_proj": "mlp", "pooling": "pyramid", "pyramid_detectors": detectors}
    kw |= ({"text_noise": noise} if noise else {}) | ({"widths": widths} if widths else {})
    return kw, {"sentence_prob": 0.5}, steps


VARIANTS: dict[str, tuple[dict, dict, int]] = {
    "baseline": ({"pooling": "attn"}, {"sentence_prob": 0.5}, 300),  # the demo recipe until the fourth round
    "text_mlp": ({"text_proj": "mlp"}, {"sentence_prob": 0.5}, 300),
    "unfreeze1": ({"text_unfreeze_last_n": 1}, {"sentence_prob": 0.5}, 300),
    "sentences0.8": ({}, {"sentence_prob": 0.8}, 300),
    "lr1e-3": ({"lr": 1e-3}, {"sentence_prob": 0.5}, 300),
    "steps600": ({}, {"sentence_prob": 0.5}, 600),
    "sentences1.0": ({}, {"sentence_prob": 1.0}, 300),
    "sentences0.8_steps600": ({}, {"sentence_prob": 0.8}, 600),
    # Sentence-level multi-positive term beside the report-level InfoNCE (identical sentences = positives).
    "sentmp1": ({"sentence_weight": 1.0}, {"sentence_prob": 0.5, "sentences": True}, 300),
    "sentmp1_reports": ({"sentence_weight": 1.0}, {"sentence_prob": 0.0, "sentences": True}, 300),
    "sentmean": ({"text_sentence_mean": True}, {"sentence_prob": 0.5}, 300),
    "sentmean_nosample": ({"text_sentence_mean": True}, {}, 300),
    "sentmean_sentmp3": (
        {"text_sentence_mean": True, "sentence_weight": 3.0},
        {"sentence_prob": 0.5, "sentences": True},
        300,
    ),
    "wide": ({"widths": (32, 64, 128)}, {"sentence_prob": 0.5}, 300),
    "sentmp3": ({"sentence_weight": 3.0}, {"sentence_prob": 0.5, "sentences": True}, 300),
    # Pooling of the volume tower's tokens (the demo used a learned attention query).
    "pool_mean": ({"pooling": "mean"}, {"sentence_prob": 0.5}, 300),
    "pool_max": ({"pooling": "max"}, {"sentence_prob": 0.5}, 300),
    "pool_meanmax": ({"pooling": "meanmax"}, {"sentence_prob": 0.5}, 300),
    "pool_max_reports": ({"pooling": "max"}, {}, 300),
    "pool_max_sentmp3": ({"pooling": "max", "sentence_weight": 3.0}, {"sentence_prob": 0.5, "sentences": True}, 300),
    "pool_max_steps600": ({"pooling": "max"}, {"sentence_prob": 0.5}, 600),
    "pool_max_lr5e-3": ({"pooling": "max", "lr": 5e-3}, {"sentence_prob": 0.5}, 300),
    "pool_max_siglip": ({"pooling": "max", "loss": "siglip"}, {"sentence_prob": 0.5}, 300),
    "pool_max_sentmp3_steps600": (
        {"pooling": "max", "sentence_weight": 3.0},
        {"sentence_prob": 0.5, "sentences": True},
        600,
    ),
    "pool_max_batch64": ({"pooling": "max"}, {"sentence_prob": 0.5}, 300, 64),
    "pool_max_batch96_steps200": ({"pooling": "max"}, {"sentence_prob": 0.5}, 200, 96),
    "pool_max_steps1500": ({}, {"sentence_prob": 0.5}, 1500),
    # Sixth round: a non-linear text head reads the reports far better (benchmarks/ct3d_text_side.py).
    "mlp_sp0.8": ({"text_proj": "mlp"}, {"sentence_prob": 0.8}, 300),
    "mlp_steps900": ({"text_proj": "mlp"}, {"sentence_prob": 0.5}, 900),
    "mlp_sp0.8_steps900": ({"text_proj": "mlp"}, {"sentence_prob": 0.8}, 900),
    # Eighth round: longer runs with the non-linear text head, and pyramid pooling (the finer stages' maxima);
    # mlp_pyramid_steps1200 is the demo recipe since then (vlp_ct3d.demo.DEMO_CLIP).
    "mlp_steps1500": ({"text_proj": "mlp"}, {"sentence_prob": 0.5}, 1500),
    "mlp_sp0.8_steps1500": ({"text_proj": "mlp"}, {"sentence_prob": 0.8}, 1500),
    "mlp_pyramid_steps1500": _pyramid(1500),
    "mlp_pyramid_steps900": _pyramid(900),
    "mlp_pyramid_steps1200": _pyramid(1200),
    "mlp_pyr16_steps1500": _pyramid(1500, detectors=16),
    "mlp_pyr32_steps1500": _pyramid(1500, detectors=32),
    # Ninth round: Gaussian noise on MiniLM's embeddings before the text head (benchmarks/ct3d_text_side.py first).
    "mlp_pyramid_noise1_steps1200": _pyramid(1200, noise=1.0),
    "mlp_pyramid_noise1.5_steps1200": _pyramid(1200, noise=1.5),
    "mlp_pyramid_noise2_steps1200": _pyramid(1200, noise=2.0),
    # Tenth round (the 6-minute budget): bf16 mixed precision (Lightning "bf16-mixed", CPU autocast), fewer steps, a
    # smaller batch, 8 channels at the 16^3 stage.
    "mlp_pyramid_noise2_steps1200_bf16": _pyramid(1200, noise=2.0),
    "mlp_pyramid_noise2_steps1000_bf16": _pyramid(1000, noise=2.0),
    "mlp_pyramid_noise2_steps1200_batch24_bf16": (*_pyramid(1200, noise=2.0), 24),
    "mlp_pyramid_noise2_w8_steps1200_bf16": _pyramid(1200, noise=2.0, widths=(8, 32, 64)),  # vlp_ct3d.demo.DEMO_CLIP
    "mlp_pyramid_noise2_w8_steps1200": _pyramid(1200, noise=2.0, widths=(8, 32, 64)),  # the same without native bf16
}
#: Lightning precision per variant (default "32-true").
PRECISION = {name: "bf16-mixed" for name in VARIANTS if name.endswith("_bf16")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data_dir", default="runs/ct3d-variants-data")
    ap.add_argument("--out", default="runs/ct3d-variants.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_train", type=int, default=None, help="training phantoms (default: the demo's)")
    ap.add_argument("--alignment", action="store_true", help="print the three zero-shot alignment matrices")
    ap.add_argument("--negative_prob", type=float, default=None, help="reports' negative-statement probability")
    args = ap.parse_args()
    import numpy as np
    import torch

    from vlp_ct3d.ctrate import ctrate_index
    from vlp_ct3d.demo import DEMO_SCALES, _zeroshot_rows, prepare_demo_data
    from vlp_ct3d.eval import encode_volumes, zeroshot_alignment
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.synth import CLASS_PROMPTS, DEMO_CLASSES, DISJOINT_PROMPTS
    from vlp_ct3d.train import VolumeTextSet, fit_clip, load_split

    torch.set_num_threads(2)
    cfg = DEMO_SCALES["small"]
    n_train = args.n_train or cfg["n_train"]
    root = prepare_demo_data(
        Path(args.data_dir), n_train, cfg["n_valid"], args.seed, progress=False, negative_prob=args.negative_prob
    )
    train_df = ctrate_index(root, "train")  # the held-out "valid" split is not indexed here
    x, t, y, _ = load_split(train_df, "demo", Path(args.data_dir) / "preprocessed-demo", list(DEMO_CLASSES))
    val = torch.from_numpy(np.array([int(p.split("_")[1]) % 5 == 0 for p in train_df["patient"].to_numpy()]))
    fit_i, val_i = (~val).nonzero().flatten(), val.nonzero().flatten()
    texts = list(t)
    prompt_sets = {"class-name pairs": CLASS_PROMPTS,
                   "disjoint wording": {c: (p[1], p[2]) for c, p in DISJOINT_PROMPTS.items()}}  # fmt: skip
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in args.variants:
        model_kw, set_kw, steps, *rest = VARIANTS[name]
        batch = rest[0] if rest else cfg["clip_batch"]
        t0 = time.perf_counter()
        clip = build_ct_clip(**{**BASE, **model_kw}, max_steps=steps, seed=args.seed)
        train = VolumeTextSet(x[fit_i], [texts[i] for i in fit_i], y[fit_i], augment=True, seed=args.seed, **set_kw)
        fit_clip(clip, train, steps, batch, args.seed, False, precision=PRECISION.get(name))
        wall = time.perf_counter() - t0
        feats = {name: encode_volumes(clip, VolumeTextSet(x[val_i], [texts[i] for i in val_i], y[val_i]))}
        rows = _zeroshot_rows({name: clip}, feats, prompt_sets)
        key = name if args.seed == 0 else f"{name}@seed{args.seed}"
        key = key if n_train == cfg["n_train"] else f"{key}@n{n_train}"
        key = key if args.negative_prob is None else f"{key}@neg{args.negative_prob:g}"
        per_class = {f"{r['prompts']} {c}": round(r[c], 3) for r in rows for c in DEMO_CLASSES if c in r}
        # Diagnostic: finding directions of the class-name pairs / training reports / validation volumes.
        align = zeroshot_alignment(clip, CLASS_PROMPTS, [texts[i] for i in fit_i], y[fit_i], *feats[name])
        results[key] = {r["prompts"]: round(r["macro AUROC"], 4) for r in rows} | {"steps": steps, "batch": batch,
                                                                                 "train s": round(wall, 1)}  # fmt: skip
        results[key] |= {f"alignment {k} (diagonal)": [round(float(v), 2) for v in m.diagonal()]
                         for k, m in align.items()}  # fmt: skip
        if args.alignment:
            for k, m in align.items():
                print(
                    f"{key}: {k} (rows {k.split(' vs ')[0]}, columns {k.split(' vs ')[1]}; {', '.join(DEMO_CLASSES)})"
                )
                print(markdown_table(["", *[c[:6] + "." for c in DEMO_CLASSES]],
                                     [[c, *[f"{float(v):.2f}" for v in row]] for c, row in zip(DEMO_CLASSES, m)]))  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(key, results[key], per_class, flush=True)
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`\n- train {len(fit_i)} / validation {len(val_i)} "
          "phantoms (patient-level split of the demo's train split)\n")  # fmt: skip
    print(markdown_table(["variant", "steps", "val AUROC class-name", "val AUROC disjoint", "train s"],
                         [[k, v["steps"], v["class-name pairs"], v["disjoint wording"], v["train s"]]
                          for k, v in results.items()]))  # fmt: skip


if __name__ == "__main__":
    main()
