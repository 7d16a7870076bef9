"""`vlp demo ecg`: generate a synthetic PTB-XL-shaped corpus (real WFDB files), pretrain MELP briefly on CPU and
report zero-shot macro AUROC on held-out records (strat_fold 10), plus a 12-lead plot and a per-class AUROC plot.

Nothing is tuned on the test fold: the schedule is fixed, there is no checkpoint selection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEMO_SCALES", "demo_model", "prepare_demo_data", "run_demo", "train_demo_model"]

DEMO_SCALES: dict[str, dict[str, Any]] = {
    # ~0.3 s per step on an idle 2-core CPU: 330 steps ~ 100 s. `time_limit_s` is only a safety stop.
    "small": {"n_records": 2400, "max_steps": 330, "time_limit_s": 170.0, "size": "tiny", "batch_size": 64},
    "large": {"n_records": 8000, "max_steps": 3000, "time_limit_s": 1800.0, "size": "small", "batch_size": 128},
}
DATA_VERSION = "v2"  # v2: realistic reports (measurement lines, negations, hedges)


def prepare_demo_data(data_dir: Path, n_records: int, seed: int, progress: bool = True) -> Path:
    """Generate (once) the synthetic PTB-XL tree and its prepared 100 Hz store; returns the store folder."""
    from vlp_ecg.datasets import LoadConfig, prepare_store, ptbxl_index
    from vlp_ecg.synth import make_fake_ptbxl

    root = Path(data_dir) / f"ptbxl-synth-{DATA_VERSION}-n{n_records}-seed{seed}"
    if not (root / "scp_statements.csv").is_file():
        make_fake_ptbxl(root, n_records, rates=(100,), seed=seed, progress=progress)
    store = root / "store100"
    if not (store / "store.json").is_file():
        index = ptbxl_index(root, sampling_rate=100, labels="all")
        prepare_store(index, store, LoadConfig(target_fs=100.0, duration=10.0, expected_fs=100.0), progress=progress)
    return store


def demo_model(size: str = "tiny", max_steps: int | None = None) -> Any:
    """The demo's MELP configuration (frozen MiniLM, ResNet1d encoder at 100 Hz, all three loss levels)."""
    from vlp_ecg.models import MELP

    return MELP(encoder="resnet1d", size=size, fs=100.0, embed_dim=128, token_dim=64, text_max_length=48,
                decoder_layers=1, max_captions=8, lr=2e-3, weight_decay=0.05, warmup_steps=20,
                max_steps=max_steps)  # fmt: skip


def train_demo_model(
    store: str | Path,
    size: str = "tiny",
    batch_size: int = 64,
    max_steps: int = 330,
    time_limit_s: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Any:
    """Pretrain MELP (all three levels) for a fixed number of steps on a prepared store with Lightning on CPU.

    The schedule (warm-up + cosine) is step-based, so results do not depend on the machine's speed;
    ``time_limit_s`` only stops a run on a much slower machine (the schedule is then cut short).
    """
    import lightning as L
    import torch

    from vlp_ecg.datasets import ECGDataModule

    L.seed_everything(seed, workers=True, verbose=False)
    dm = ECGDataModule(store=str(store), batch_size=batch_size, seed=seed,
                       augment=[{"name": "amplitude_scale", "scale": [0.85, 1.15]}, {"name": "noise", "std": 0.01}])  # fmt: skip
    dm.setup("fit")
    model = demo_model(size, max_steps)
    # Fill the frozen text tower's cache once (reports and their sentences), so epochs only pay for the ECG side.
    texts = sorted(set(dm.train_set.frame["text"]))
    with torch.no_grad():
        for i in range(0, len(texts), 256):
            model.towers["text"](texts[i : i + 256])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=-(-max_steps // max(1, len(dm.train_set) // batch_size)),
        max_steps=max_steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, max_time={"seconds": int(time_limit_s)} if time_limit_s else None,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model


def run_demo(ctx: Any) -> Any:
    """Demo entry point registered as ``ecg`` (``vlp demo ecg``); see module docstring."""
    import torch

    from vlp_core.demo import DemoResult
    from vlp_ecg.datasets import ECGStore, ECGTextDataset
    from vlp_ecg.eval import format_table, write_results, zeroshot_evaluate
    from vlp_ecg.synth import CLASSES, RHYTHMS

    cfg = DEMO_SCALES.get(ctx.scale, DEMO_SCALES["small"])
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = prepare_demo_data(Path(ctx.data_dir), cfg["n_records"], ctx.seed, ctx.progress)
    t_data = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = train_demo_model(store, cfg["size"], cfg["batch_size"], cfg["max_steps"], cfg["time_limit_s"],
                             ctx.seed, ctx.progress)  # fmt: skip
    steps = int(model.global_step)
    t_train = time.perf_counter() - t1
    st = ECGStore(store)
    test = ECGTextDataset(st, "test")
    res = zeroshot_evaluate(model, test, classes=list(CLASSES), n_boot=1000, seed=ctx.seed,
                            exclusive_groups=[RHYTHMS])  # fmt: skip
    write_results(res, out, "zeroshot_fold10")
    (out / "zeroshot_table.md").write_text(format_table(res) + "\n")
    figures = [_plot_example(st, test, out), _plot_auroc(res, out)]
    metrics = {
        "zero-shot macro AUROC": round(res["macro_auroc"], 4),
        "macro AUROC 95% CI low": round(res["macro_ci"][0], 4),
        "macro AUROC 95% CI high": round(res["macro_ci"][1], 4),
        "pretrain seconds": round(t_train, 1),
        "pretrain steps": float(steps),
        "data seconds": round(t_data, 1),
        "test records": float(res["n"]),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    notes = [
        f"Synthetic PTB-XL-layout corpus: {cfg['n_records']} WFDB records at 100 Hz (folds 1-8 train, 10 test).",
        f"MELP (ResNet1d-{cfg['size']}, frozen MiniLM + trained projection, token+beat+rhythm losses), "
        f"pretrained {steps} steps ({t_train:.0f} s) on CPU; zero-shot with prompt x template ensembles, no test-fold tuning.",
        "",
        format_table(res),
    ]
    return DemoResult("ecg", metrics, "zero-shot macro AUROC", target=0.90, figures=figures, notes=notes)


def _plot_example(store: Any, test: Any, out: Path) -> Path:
    """3 x 4 plot of the first test record (from the prepared store: 100 Hz, leads already in canonical order)."""
    from vlp_ecg.plot import plot_12lead

    row = test.frame.iloc[0]
    j = int(test.rows[0])
    return plot_12lead(np.asarray(store.signals[j]), store.fs, store.leads, title=f"synthetic record {row['key']}",
                       report=row["text"], out=out / "ecg_12lead.png")  # type: ignore[return-value]  # fmt: skip


def _plot_auroc(res: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["per_class"])
    auc = [res["per_class"][c]["auroc"] for c in names]
    lo = [res["per_class"][c]["auroc"] - res["per_class"][c]["low"] for c in names]
    hi = [res["per_class"][c]["high"] - res["per_class"][c]["auroc"] for c in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, auc, yerr=[lo, hi], color="#4c72b0", capsize=3)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.axhline(res["macro_auroc"], color="#c44e52", lw=1.5, label=f"macro {res['macro_auroc']:.3f}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("zero-shot AUROC (95% CI)")
    ax.set_title("vlp-ecg demo: zero-shot AUROC on held-out fold 10")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / "zeroshot_auroc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
