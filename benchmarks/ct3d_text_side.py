"""How far the text side lets zero-shot go, with a volume side that is aligned (a diagnostic for the ct3d demo).

Same data and protocol as ``ct3d_zeroshot_variants.py``: the demo's 400 training phantoms (seed 0) split by patient
(id % 5 == 0 → validation); the held-out ``valid`` phantoms are never read. To take the volume tower out of the
question, the volumes are described by **fixed** features — the per-channel mean ‖ max of every level of a randomly
initialised VAE encoder (AutoencoderKL 16-32-32, the demo's; a linear probe on them reaches 0.99 for consolidation,
effusion and emphysema) — computed once, so a volume MLP head and a text head can train for thousands of steps in
seconds (core ``ClipLoss``, batch 64, sentence sampling as in the demo). Each variant reports, on the validation
volumes:

- ``reports``: the volumes scored against label prototypes of the projected training reports (mean embedding of
  the reports with the finding minus without it) — how well training aligned each finding at the report level;
  not zero-shot, an upper reference for it;
- ``class-name`` / ``disjoint``: zero-shot macro AUROC with the two prompt sets;
- the same prompts scored against the training reports' text in the trained joint space
  (:func:`vlp_ct3d.eval.report_text_zeroshot`, no volumes).

The first line printed is the same text-only score with MiniLM alone (before any projection).

    uv run python benchmarks/ct3d_text_side.py --variants linear mlp identity
    uv run python benchmarks/ct3d_text_side.py --variants finetune   # MiniLM trained too (~12 min)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env_line, markdown_table, repro_command  # noqa: E402

# name → text head ("linear" 384→128, "mlp" 384→512→128, "identity": MiniLM's 384-d space, "residual": identity +
# rank-32 update), sentence_prob, steps, fine-tuned MiniLM blocks[, batch (default --batch)].
VARIANTS: dict[str, tuple] = {
    "linear": ("linear", 0.5, 2000, 0),
    "linear_sp0.8": ("linear", 0.8, 2000, 0),
    "mlp": ("mlp", 0.5, 2000, 0),
    "mlp_sp0.8": ("mlp", 0.8, 2000, 0),
    "mlp_sp1.0": ("mlp", 1.0, 2000, 0),
    "identity": ("identity", 0.5, 2000, 0),
    "residual_sp0.8": ("residual", 0.8, 2000, 0),
    "finetune": ("linear", 0.8, 600, 6, 32),  # ~1.2 s per step
    # Ninth round: regularising the head on the frozen encoder's space. "_noise<k>": Gaussian noise of k times each
    # embedding's own std before the head (core ProjectionHead input_noise); "_drop<p>": input dropout; "mlp_hid0.3":
    # dropout on the MLP's hidden layer.
    **{f"mlp_noise{k:g}": (f"mlp_noise{k:g}", 0.5, 2000, 0) for k in (0.5, 1.0, 1.5, 2.0, 3.0)},
    **{f"mlp_drop{p:g}": (f"mlp_drop{p:g}", 0.5, 2000, 0) for p in (0.3, 0.6, 0.8)},
    "mlp_hid0.3": ("mlp_hid0.3", 0.5, 2000, 0),
    "mlp_noise2_steps4000": ("mlp_noise2", 0.5, 4000, 0),
    "linear_noise2": ("linear_noise2", 0.5, 2000, 0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "finetune"], choices=list(VARIANTS))
    ap.add_argument("--data_dir", default="runs/ct3d-variants-data")
    ap.add_argument("--out", default="runs/ct3d-text-side.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from vlp_core.eval import multilabel_zero_shot
    from vlp_core.losses import ClipLoss
    from vlp_core.towers import ProjectionHead
    from vlp_ct3d.ctrate import ctrate_index
    from vlp_ct3d.demo import DEMO_SCALES, prepare_demo_data
    from vlp_ct3d.eval import class_directions, report_text_zeroshot, zeroshot_table
    from vlp_ct3d.gen import VAEModule
    from vlp_ct3d.models import CTTextTower
    from vlp_ct3d.synth import CLASS_PROMPTS, DEMO_CLASSES, DISJOINT_PROMPTS
    from vlp_ct3d.train import load_split, report_sentences

    torch.set_num_threads(2)
    cfg = DEMO_SCALES["small"]
    root = prepare_demo_data(Path(args.data_dir), cfg["n_train"], cfg["n_valid"], args.seed, progress=False)
    train_df = ctrate_index(root, "train")  # the held-out "valid" split is not indexed here
    x, t, y, _ = load_split(train_df, "demo", Path(args.data_dir) / "preprocessed-demo", list(DEMO_CLASSES))
    val = torch.from_numpy(np.array([int(p.split("_")[1]) % 5 == 0 for p in train_df["patient"].to_numpy()]))
    fit_i, val_i = (~val).nonzero().flatten().tolist(), val.nonzero().flatten()
    texts = list(t)
    fit_texts = [texts[i] for i in fit_i]
    sentences = [report_sentences(s) for s in texts]
    prompt_sets = {"class-name": CLASS_PROMPTS, "disjoint": {c: (p[1], p[2]) for c, p in DISJOINT_PROMPTS.items()}}

    # Fixed volume features: mean ‖ max per channel of every level of a randomly initialised VAE encoder.
    torch.manual_seed(args.seed)
    encoder = VAEModule(channels=(16, 32, 32), latent_channels=4).autoencoder.encoder.eval()
    with torch.no_grad():
        rows = []
        for i in range(0, len(x), 32):
            h, levels = x[i : i + 32], []
            for block in encoder.blocks:
                h = block(h)
                if h.shape[1] > 4:  # skip the 4-channel latent convolution
                    flat = h.flatten(2)
                    levels.append(torch.cat([flat.mean(2), flat.amax(2)], 1))
            rows.append(torch.cat(levels, 1))
    feats = torch.cat(rows)
    feats = (feats - feats[fit_i].mean(0)) / (feats[fit_i].std(0) + 1e-6)

    base_text = CTTextTower(embed_dim=128)
    text_side = {
        n: report_text_zeroshot(base_text, ps, fit_texts, y[fit_i])["macro_auroc"] for n, ps in prompt_sets.items()
    }
    print("text side (prompts vs training reports, MiniLM alone):", {k: round(v, 3) for k, v in text_side.items()})

    class Residual(nn.Module):
        def __init__(self, dim: int, rank: int) -> None:
            super().__init__()
            self.down, self.up = nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False)
            nn.init.zeros_(self.up.weight)

        def forward(self, e: torch.Tensor) -> torch.Tensor:
            return e + self.up(self.down(e))

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in args.variants:
        head, sentence_prob, steps, unfreeze, *rest = VARIANTS[name]
        batch_size = rest[0] if rest else args.batch
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        dim = 384 if head in ("identity", "residual") else 128
        tower = CTTextTower(embed_dim=128, unfreeze_last_n=unfreeze, cache_embeddings=not unfreeze)
        kind, _, reg = head.partition("_")

        def mlp() -> nn.Module:
            return nn.Sequential(nn.Linear(384, 512), nn.GELU(), nn.Linear(512, 128))

        if reg.startswith("noise"):  # noise on the encoder's embedding, then the head
            base = {"mlp": mlp(), "linear": nn.Linear(384, 128)}[kind]
            tower.proj = nn.Sequential(ProjectionHead(384, 384, "none", input_noise=float(reg[5:])), base)
        elif reg.startswith("drop"):
            tower.proj = nn.Sequential(nn.Dropout(float(reg[4:])), mlp())
        elif reg.startswith("hid"):
            tower.proj = nn.Sequential(nn.Linear(384, 512), nn.GELU(), nn.Dropout(float(reg[3:])), nn.Linear(512, 128))
        else:
            tower.proj = {"linear": tower.proj, "mlp": mlp(), "identity": nn.Identity(),
                          "residual": Residual(384, 32)}[head]  # fmt: skip
        vol_head = nn.Sequential(nn.Linear(feats.shape[1], 256), nn.GELU(), nn.Linear(256, dim))
        loss_fn = ClipLoss()
        encoder_params = [p for p in tower.encoder.parameters() if p.requires_grad]
        head_params = [*vol_head.parameters(), *tower.proj.parameters(), *loss_fn.parameters()]
        opt = torch.optim.AdamW([{"params": head_params}, {"params": encoder_params, "lr": 2e-5}], lr=1e-3,
                                weight_decay=0.05)  # fmt: skip
        rng = random.Random(args.seed)
        tower.train()
        for _ in range(steps):
            idx = rng.sample(fit_i, batch_size)
            batch = [rng.choice(sentences[i]) if sentences[i] and rng.random() < sentence_prob else texts[i]
                     for i in idx]  # fmt: skip
            loss = loss_fn(vol_head(feats[idx]), tower(batch).embedding)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_fn.clamp_parameters()
        wall = time.perf_counter() - t0
        tower.eval()
        with torch.no_grad():
            vol = vol_head(feats[val_i])

            def encode(s: list[str]) -> torch.Tensor:
                return torch.cat([tower(s[i : i + 64]).embedding for i in range(0, len(s), 64)])  # noqa: B023

            protos = class_directions(encode(fit_texts), y[fit_i])
            res = {"reports": zeroshot_table(F.normalize(vol, dim=-1) @ protos.T, y[val_i], DEMO_CLASSES, n_boot=0)}
            for set_name, ps in prompt_sets.items():
                scores = multilabel_zero_shot(vol, encode, {c: list(ps[c][0]) for c in DEMO_CLASSES},
                                              {c: list(ps[c][1]) for c in DEMO_CLASSES}, mode="diff")  # fmt: skip
                res[set_name] = zeroshot_table(scores, y[val_i], DEMO_CLASSES, n_boot=0)
                res[f"{set_name} on report text"] = report_text_zeroshot(tower, ps, fit_texts, y[fit_i], projected=True)
        key = name if args.seed == 0 else f"{name}@seed{args.seed}"
        results[key] = {k: round(r["macro_auroc"], 3) for k, r in res.items()} | {
            "per class": {k: [round(r["per_class"][c]["auroc"], 2) for c in DEMO_CLASSES] for k, r in res.items()},
            "steps": steps, "batch": batch_size, "train s": round(wall, 1)}  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(key, results[key], flush=True)
    print(f"- {env_line()}\n- reproduce: `{repro_command()}`\n- train {len(fit_i)} / validation {len(val_i)} "
          f"phantoms; per class in the order {', '.join(DEMO_CLASSES)}\n")  # fmt: skip
    print(markdown_table(["variant", "steps", "reports (prototypes)", "class-name", "disjoint",
                          "class-name / disjoint on report text (joint space)", "train s"],
                         [[k, v["steps"], v["reports"], v["class-name"], v["disjoint"],
                           f"{v['class-name on report text']} / {v['disjoint on report text']}", v["train s"]]
                          for k, v in results.items()]))  # fmt: skip


if __name__ == "__main__":
    main()
