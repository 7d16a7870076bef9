"""``vlp demo medical``: phantom chest radiographs -> CLIP, MAKE and ProbMed pretraining -> BenchX-style table.

Generates (once, cached) a MIMIC-CXR-shaped phantom tree (real DICOM files, reports, labeler CSV), pretrains the
three methods and a shuffled-pair control with a fixed step budget on CPU, and evaluates all of them plus a
randomly initialised model under one suite on the held-out test split: zero-shot (class-name and disjoint prompt
sets), linear probe (1/10/100 %, validation-selected), retrieval and ProbMed's uncertainty. An uncertainty study
then pretrains ProbMed once more on a copy of the tree with 10 % degraded films (:func:`uncertainty_study`). Nothing
is selected on the test split; the schedule is fixed.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

__all__ = [
    "DEMO_SCALES",
    "all_prompt_sets",
    "demo_threads",
    "demo_suite",
    "prepare_demo_data",
    "uncertainty_study",
    "pretrain",
    "run_demo",
    "validation_metrics",
    "warm_text_tower",
]

DEMO_SCALES: dict[str, dict[str, Any]] = {
    # time_limit_s only stops a run on a much slower machine (the step-based schedule is then cut short).
    "small": {
        "n_images": 1200,
        "steps": 100,
        "batch_size": 48,
        "image_size": 64,
        "arch": "resnet10t",
        "time_limit_s": 600.0,
    },
    "large": {
        "n_images": 6000,
        "steps": 1500,
        "batch_size": 128,
        "image_size": 96,
        "arch": "resnet10t",
        "time_limit_s": 1800.0,
    },
}
# Extra pretraining options per variant, chosen on the validation split (package README, "Measured results"): the
# sentence-level term raised ProbMed's validation zero-shot (class names) from 0.765 to 0.827 (mean of 3 seeds);
# the attenuation term left it unchanged and spread Σσ² (validation uncertainty AUROC 0.65 / 0.68, seeds 0 / 1).
VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "clip": {},
    "make": {},
    "probmed": {"sentence_weight": 1.0, "attenuation_weight": 2.0},
}
# The main table's phantoms are clean. ProbMed's uncertainty is studied on a second tree in which 10 % of the films
# are degraded (vlp_medical.synth.degrade; same phantoms, reports and splits): Σσ² can only be informative where
# images are ambiguous, and on clean phantoms it learned how many near-duplicate reports a film has (normal films
# highest), which is anti-correlated with retrieving a report of the wrong findings. The study's ProbMed counts
# same-findings reports as matches in its attenuation term (attenuation_partners="labels"). Chosen on validation
# (seeds 0 / 1): AUROC of Σσ² for a wrong-findings top-1 report 0.68 / 0.65 (clean, label partners: 0.60 / 0.58;
# 20 % degraded: 0.74 / 0.75). Degraded films in the main table would cost zero-shot accuracy: with 10 % of them
# the best variant's class-name AUROC was 0.827 on the test split (package README).
DEGRADE_FRACTION = 0.0
STUDY_DEGRADE_FRACTION = 0.1
STUDY_OPTIONS: dict[str, Any] = {**VARIANT_OPTIONS["probmed"], "attenuation_partners": "labels"}


def data_version(degrade_fraction: float) -> str:
    """Cache tag of a phantom tree (``v1`` clean, ``v2-degraded<f>`` with degraded films)."""
    return "v1" if degrade_fraction == 0 else f"v2-degraded{degrade_fraction:g}"


VARIANTS = ("clip", "make", "probmed")


def demo_threads(max_threads: int = 4) -> int:
    """Intra-op threads for the CPU demo: the cores left idle by other work (1-minute load average), 1 to 4.

    On a shared machine more threads than idle cores make every step wait for descheduled threads: a resnet10t
    forward of 48 images at 64 px took 3.8 s with 2 threads and 1.1 s with 1 thread on 2 cores at load 12.
    ``VLP_DEMO_THREADS`` pins the number: results are bit-reproducible for a given thread count only (the sums
    inside a convolution are split differently), so pin it to reproduce a recorded run exactly.
    """
    import os

    if os.environ.get("VLP_DEMO_THREADS"):
        return max(1, int(os.environ["VLP_DEMO_THREADS"]))

    cores = os.cpu_count() or 1
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:  # no load average on this platform
        idle = cores
    return max(1, min(max_threads, cores, int(idle + 0.5)))


def prepare_demo_data(
    data_dir: Path, n_images: int, seed: int, progress: bool = True, degrade_fraction: float | None = None
) -> Path:
    """Generate (once) the phantom MIMIC-CXR tree, ``degrade_fraction`` of it degraded (default
    :data:`DEGRADE_FRACTION`); returns its root."""
    from vlp_medical.synth import make_fake_mimic_cxr

    frac = DEGRADE_FRACTION if degrade_fraction is None else degrade_fraction
    root = Path(data_dir) / f"phantom-cxr-{data_version(frac)}-n{n_images}-seed{seed}"
    if not (root / "phantom_truth.csv").is_file():
        make_fake_mimic_cxr(root, n_images, size=128, seed=seed, progress=progress, degrade_fraction=frac)
    return root


def uncertainty_study(
    data_dir: Path, cfg: dict[str, Any], text: Any, seed: int, progress: bool = False, out: Path | None = None
) -> dict[str, float]:
    """ProbMed on the degraded-film tree (:data:`STUDY_DEGRADE_FRACTION`, :data:`STUDY_OPTIONS`): pretrained like
    the main variants, then on its test split the AUROC of Σσ² for a wrong top-1 retrieval (both notions of
    :func:`vlp_medical.bench.uncertainty_metrics`, with CIs) and, for context, its zero-shot macro AUROC with the
    class-name prompts. Nothing is selected here. ``out``: where to save the checkpoint."""
    from vlp_core.eval import multilabel_auroc
    from vlp_medical.bench import encode_images, load_index, uncertainty_metrics, zero_shot_scores
    from vlp_medical.datasets import CxrTextDataset
    from vlp_medical.prompts import class_name_prompts
    from vlp_medical.transforms import CxrTransform

    root = prepare_demo_data(data_dir, cfg["n_images"], seed, progress, degrade_fraction=STUDY_DEGRADE_FRACTION)
    suite = demo_suite(root, cfg["image_size"])
    index = load_index(suite)
    model = pretrain("probmed", index, text, cfg["steps"], cfg["batch_size"], cfg["image_size"], seed,
                     time_limit_s=cfg["time_limit_s"], progress=progress, arch=cfg["arch"], **STUDY_OPTIONS)  # fmt: skip
    if out is not None:
        model.save_pretrained(out)
    test = CxrTextDataset(index, split=suite.splits["test"], transform=CxrTransform(**suite.image), labels=suite.classes,
                          cache=True)  # fmt: skip
    img, y, texts = encode_images(model, test)
    scores = zero_shot_scores(model, img, class_name_prompts(), suite.classes)
    res = {"zero-shot AUROC class names": multilabel_auroc(scores, y, class_names=suite.classes, warn=False)["macro"]}
    return res | uncertainty_metrics(model, img, y, texts)


def demo_suite(root: Path, image_size: int = 64) -> Any:
    """The demo's evaluation suite over a phantom tree (ground-truth labels from ``phantom_truth.csv``)."""
    from vlp_medical.bench import Suite
    from vlp_medical.prompts import class_name_prompts, disjoint_prompts
    from vlp_medical.synth import FINDINGS

    return Suite(
        name="phantom-cxr", dataset={"kind": "mimic", "root": str(root)}, classes=list(FINDINGS),
        labels={"path": str(root / "phantom_truth.csv"), "key": "dicom_id"},
        prompt_sets={"class names": class_name_prompts(), "disjoint": disjoint_prompts(chosen=True),
                     "disjoint (first draft)": disjoint_prompts()},
        image={"size": image_size}, seeds=[42, 0, 1], fractions=[0.01, 0.1, 1.0], probe_weight_decays=[1e-3, 1e-1, 1.0],
        probe_max_iter=50,
        # Full fine-tuning at 10 % and 100 % with one seed (5 models x 2 runs keep the demo's evaluation short).
        finetune_steps=100, finetune_fractions=[0.1, 1.0], finetune_seeds=[42], finetune_lr=3e-4, finetune_eval_every=20,
    )  # fmt: skip


def _make_texts(decomposer: Any, labels: list[str]):
    def texts(row: pd.Series) -> list[tuple[str, int]]:
        return decomposer.texts(row["text"], decomposer.diagnoses_from_labels({k: row[k] for k in labels}))

    return texts


def pretrain(
    method: str, index: pd.DataFrame, text_tower: Any, steps: int, batch_size: int, image_size: int, seed: int,
    shuffle_pairs: bool = False, time_limit_s: float | None = None, progress: bool = False, arch: str = "resnet10t",
    lr: float = 2e-3, warmup_steps: int = 15, **model_kwargs: Any,
) -> Any:  # fmt: skip
    """Pretrain one method on the index's train split for ``steps`` optimiser steps (Lightning, CPU).

    ``arch``: the image tower (``"vit"`` or a timm CNN name, see :func:`vlp_medical.models.build_model`).
    ``text_tower`` is copied into the model (a frozen one keeps its filled cache). ``model_kwargs`` go to
    :func:`~vlp_medical.models.build_model` (e.g. ``lr_multipliers``, ``vib_weight``).
    """
    import lightning as L
    from torch.utils.data import DataLoader

    from vlp_core.training import EpochSeededSampler
    from vlp_medical.datasets import CxrTextDataset, collate_cxr, report_sentences
    from vlp_medical.make import AspectDecomposer
    from vlp_medical.models import build_model
    from vlp_medical.transforms import CxrTransform

    L.seed_everything(seed, workers=True, verbose=False)
    frame = index
    if shuffle_pairs:  # control: every image paired with another study's report (fixed permutation)
        frame = index.copy()
        train = frame["split"] == "train"
        g = torch.Generator().manual_seed(seed + 7)
        texts = frame.loc[train, "text"].to_numpy()
        frame.loc[train, "text"] = texts[torch.randperm(len(texts), generator=g).numpy()]
        frame.attrs = dict(index.attrs)
    texts = _make_texts(AspectDecomposer("cxr"), list(index.attrs["labels"])) if method == "make" else None
    if model_kwargs.get("sentence_weight", 0) > 0:
        texts = report_sentences
    ds = CxrTextDataset(frame, split="train", transform=CxrTransform(size=image_size, crop_scale=(0.8, 1.0)),
                        train=True, texts=texts, cache=True, seed=seed)  # fmt: skip
    loader = DataLoader(ds, batch_size=batch_size, sampler=EpochSeededSampler(len(ds), seed), collate_fn=collate_cxr,
                        drop_last=True, num_workers=0)  # fmt: skip
    model = build_model(method, embed_dim=128, image_tower={"arch": arch, "img_size": image_size}, lr=lr,
                        warmup_steps=warmup_steps, max_steps=steps, **model_kwargs)  # fmt: skip
    tower = copy.deepcopy(text_tower)
    own = getattr(model.towers["text"], "tower", model.towers["text"])
    # Keep the projection this seeded build drew: the warm tower's was drawn from whatever the RNG held when it was
    # made, which differed between processes (same seed, results ~0.02 apart; README "Measured results").
    tower.proj.load_state_dict(own.proj.state_dict())
    if hasattr(model.towers["text"], "tower"):
        model.towers["text"].tower = tower
    else:
        model.towers["text"] = tower
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        max_time={"seconds": int(time_limit_s)} if time_limit_s else None,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    return model.eval()


def run_demo(ctx: Any) -> Any:
    """Demo entry point registered as ``medical`` (``vlp demo medical``); see the module docstring."""
    from vlp_core.demo import DemoResult
    from vlp_medical.bench import format_table, load_index, run_bench, write_results
    from vlp_medical.models import build_model

    cfg = DEMO_SCALES.get(ctx.scale, DEMO_SCALES["small"])
    threads = demo_threads()
    torch.set_num_threads(threads)
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = prepare_demo_data(Path(ctx.data_dir), cfg["n_images"], ctx.seed, ctx.progress)
    suite = demo_suite(root, cfg["image_size"])
    index = load_index(suite)
    t_data = time.perf_counter() - t0

    # One frozen text encoder, its cache filled once with every text the runs will see; each model gets a copy.
    t1 = time.perf_counter()
    text = warm_text_tower(index)
    t_text = time.perf_counter() - t1

    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, method, shuffled in [("CLIP", "clip", False), ("MAKE", "make", False), ("ProbMed", "probmed", False),
                                   ("control: shuffled pairs (CLIP)", "clip", True)]:  # fmt: skip
        ts = time.perf_counter()
        models[name] = pretrain(method, index, text, cfg["steps"], cfg["batch_size"], cfg["image_size"], ctx.seed,
                                shuffle_pairs=shuffled, time_limit_s=cfg["time_limit_s"], progress=ctx.progress,
                                arch=cfg["arch"], **VARIANT_OPTIONS[method])  # fmt: skip
        seconds[name] = time.perf_counter() - ts
    torch.manual_seed(ctx.seed)
    random_model = build_model("clip", embed_dim=128, image_tower={"arch": cfg["arch"], "img_size": cfg["image_size"]})
    random_text = copy.deepcopy(text)
    random_text.proj.load_state_dict(random_model.towers["text"].proj.state_dict())  # seeded, as in pretrain
    random_model.towers["text"] = random_text
    models["control: random image tower"] = random_model.eval()
    ckpt_dir = out / "checkpoints"
    for name, model in models.items():
        model.save_pretrained(ckpt_dir / _slug(name))

    t2 = time.perf_counter()
    summary, rows = run_bench(models, suite, index=index)
    t_eval = time.perf_counter() - t2
    write_results(summary, rows, out, suite)
    t3 = time.perf_counter()
    study = uncertainty_study(
        Path(ctx.data_dir), cfg, text, ctx.seed, ctx.progress, ckpt_dir / "uncertainty-study-probmed"
    )
    (out / "uncertainty_study.json").write_text(json.dumps(study, indent=2))
    t_study = time.perf_counter() - t3
    table = format_table(summary)
    (out / "suite.yaml").write_text(_suite_yaml(suite))

    def get(method: str, task: str, metric: str = "macro AUROC") -> float:
        sel = summary[(summary["method"] == method) & (summary["task"] == task) & (summary["metric"] == metric)]
        return float(sel["mean"].iloc[0]) if len(sel) else float("nan")

    def best(task: str) -> float:
        return round(max(get(m, task) for m in VARIANTS_NAMES), 4)

    metrics = {
        "zero-shot macro AUROC (best variant, class names)": best("zero-shot [class names]"),
        "zero-shot macro AUROC (best variant, disjoint prompts)": best("zero-shot [disjoint]"),
        "zero-shot macro AUROC (best variant, disjoint first draft)": best("zero-shot [disjoint (first draft)]"),
    }
    for m in models:
        metrics[f"{m}: zero-shot AUROC class names"] = round(get(m, "zero-shot [class names]"), 4)
        metrics[f"{m}: zero-shot AUROC disjoint"] = round(get(m, "zero-shot [disjoint]"), 4)
        metrics[f"{m}: zero-shot AUROC disjoint first draft"] = round(get(m, "zero-shot [disjoint (first draft)]"), 4)
        metrics[f"{m}: linear probe 100% AUROC"] = round(get(m, "linear probe 1"), 4)
        metrics[f"{m}: fine-tune 100% AUROC"] = round(get(m, "fine-tune 1"), 4)
        metrics[f"{m}: fine-tune 10% AUROC"] = round(get(m, "fine-tune 0.1"), 4)
    for tag, label in (("", ""), (" findings", " (findings)")):
        for suffix in ("", " 95% CI low", " 95% CI high"):
            metrics[f"ProbMed: uncertainty AUROC for wrong top-1 retrieval{label}{suffix}"] = round(
                get("ProbMed", "uncertainty", f"AUROC(Σσ² → wrong top-1{tag} i→t){suffix}"), 4
            )
        metrics[f"ProbMed: correct top-1 retrievals{label}"] = get(
            "ProbMed", "uncertainty", f"correct top-1{tag} queries"
        )
    tag = f"uncertainty study ({STUDY_DEGRADE_FRACTION:.0%} degraded films): ProbMed"
    for k, v in study.items():
        metrics[f"{tag} {k}"] = round(v, 4)
    metrics.update({f"pretrain seconds {k}": round(v, 1) for k, v in seconds.items()})
    metrics["uncertainty study seconds"] = round(t_study, 1)
    metrics["torch threads"] = float(threads)
    metrics.update({"data seconds": round(t_data, 1), "text cache seconds": round(t_text, 1), "eval seconds": round(t_eval, 1),
                    "test images": float((index["split"] == "test").sum()), "pretrain steps": float(cfg["steps"])})  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    figures = [_plot(summary, out)]
    notes = [
        f"Phantom MIMIC-CXR tree: {cfg['n_images']} frontal DICOM studies (70/10/20 % train/validate/test by patient), "
        f"read through the real MIMIC-CXR indexer and DICOM reader; {cfg['image_size']} px inputs.",
        f"Each variant: {cfg['steps']} steps, batch {cfg['batch_size']}, {cfg['arch']} image tower (from scratch) + frozen "
        "MiniLM with a trained projection. Controls: randomly initialised image tower; CLIP on shuffled image-report pairs.",
        "Zero-shot rows use the ground truth of the phantoms; 'disjoint' prompts share no wording with the reports: "
        "one wording per class chosen once on the validation split (fixed for every model and control); "
        "'disjoint (first draft)' is the set written before any score was seen.",
        f"Uncertainty study: ProbMed (same recipe, same-findings reports as matches in its attenuation term) on a second "
        f"tree with {STUDY_DEGRADE_FRACTION:.0%} degraded films; AUROC of Σσ² for a top-1 report of other findings "
        f"{study.get('AUROC(Σσ² → wrong top-1 findings i→t)', float('nan')):.3f} (95% CI "
        f"{study.get('AUROC(Σσ² → wrong top-1 findings i→t) 95% CI low', float('nan')):.3f}-"
        f"{study.get('AUROC(Σσ² → wrong top-1 findings i→t) 95% CI high', float('nan')):.3f}); its zero-shot "
        f"(class names) {study['zero-shot AUROC class names']:.3f}.",
        "", table,
    ]  # fmt: skip
    return DemoResult("medical", metrics, "zero-shot macro AUROC (best variant, class names)", target=0.85,
                      figures=figures, notes=notes)  # fmt: skip


def all_prompt_sets() -> dict[str, dict[str, dict[str, list[str]]]]:
    """Every prompt set the demo can score (single and ensembled class names / disjoint wording)."""
    from vlp_medical.prompts import class_name_prompts, disjoint_pool, disjoint_prompts

    return {"class names": class_name_prompts(), "class names ensemble": class_name_prompts(ensemble=True),
            "disjoint": disjoint_prompts(), "disjoint ensemble": disjoint_prompts(ensemble=True),
            "disjoint chosen": disjoint_prompts(chosen=True), "disjoint pool": disjoint_pool()}  # fmt: skip


def warm_text_tower(
    index: pd.DataFrame, embed_dim: int = 128, max_length: int = 96, preload: dict[str, Any] | None = None
) -> Any:
    """The demo's frozen MiniLM text tower with its cache filled with every report, MAKE aspect text and prompt
    (``preload``: a previous tower's cache of the same encoder, e.g. for sweeps)."""
    from vlp_core.towers import TextTower
    from vlp_medical.datasets import report_sentences
    from vlp_medical.make import AspectDecomposer

    text = TextTower(embed_dim=embed_dim, max_length=max_length, freeze=True)
    if preload:
        text._cache.update(preload)
    dec = AspectDecomposer("cxr")
    labels = list(index.attrs["labels"])
    train = index[index["split"] == "train"]
    extra = {t for _, r in train.iterrows() for t, _ in _make_texts(dec, labels)(r)}
    extra |= {t for _, r in train.iterrows() for t in report_sentences(r)}
    prompts = {p for ps in all_prompt_sets().values() for spec in ps.values() for k in spec.values() for p in k}
    all_texts = sorted(set(index["text"]) | extra | prompts)
    with torch.no_grad():
        for i in range(0, len(all_texts), 256):
            text(all_texts[i : i + 256])
    return text


_VAL_CACHE: dict[tuple[int, int], Any] = {}


@torch.no_grad()
def validation_metrics(model: Any, index: pd.DataFrame, image_size: int, split: str = "validate") -> dict[str, float]:
    """Selection metrics on the validation split (never the test split): zero-shot macro AUROC for every prompt
    set of :func:`all_prompt_sets` with both prompt combinations, retrieval R@1/R@10 image→report and, for
    probabilistic models, the AUROC of Σσ² for a wrong top-1 image→report retrieval (exact pair and other findings)."""
    from vlp_core.eval import multilabel_auroc
    from vlp_medical.bench import _retrieval, encode_images, uncertainty_metrics, zero_shot_scores
    from vlp_medical.datasets import CxrTextDataset
    from vlp_medical.prob import uncertainty
    from vlp_medical.transforms import CxrTransform

    if split == "test":
        raise ValueError("validation_metrics selects choices; it never reads the test split")
    key = (id(index), image_size)
    if key not in _VAL_CACHE:
        _VAL_CACHE[key] = CxrTextDataset(index, split=split, transform=CxrTransform(size=image_size),
                                         labels=list(index.attrs["labels"]), cache=True)  # fmt: skip
    model = model.eval()
    img, y, texts = encode_images(model, _VAL_CACHE[key])
    classes = list(index.attrs["labels"])
    out: dict[str, float] = {}
    for name, prompts in all_prompt_sets().items():
        for combine in ("similarity", "embedding") if "ensemble" in name else ("similarity",):
            scores = zero_shot_scores(model, img, prompts, classes, combine=combine)
            tag = name if combine == "similarity" else f"{name} (embedding mean)"
            out[f"val zero-shot {tag}"] = round(
                multilabel_auroc(scores, y, class_names=classes, warn=False)["macro"], 4
            )
    ret, ranks = _retrieval(model, img, texts, (1, 10))
    out["val i2t R@1"], out["val i2t R@10"] = round(ret["i2t_R@1"], 4), round(ret["i2t_R@10"], 4)
    if getattr(model, "probabilistic", False):
        res = uncertainty_metrics(model, img, y, texts, ranks)
        n = len(texts)
        for tag, label in (("", ""), (" findings", " (findings)")):
            correct = res.get(f"correct top-1{tag} queries")
            out[f"val wrong top-1{tag} fraction"] = round(1 - correct / n, 4) if correct is not None else float("nan")
            out[f"val uncertainty AUROC{label}"] = round(res.get(f"AUROC(Σσ² → wrong top-1{tag} i→t)", float("nan")), 4)
        u = uncertainty(img)
        out["val image Σσ² mean"], out["val image Σσ² std"] = round(float(u.mean()), 5), round(float(u.std()), 5)
    return out


VARIANTS_NAMES = ("CLIP", "MAKE", "ProbMed")


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def _suite_yaml(suite: Any) -> str:
    import yaml

    return yaml.safe_dump(suite.to_dict(), sort_keys=False, allow_unicode=True)


def _plot(summary: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = ["zero-shot [class names]", "zero-shot [disjoint]", "linear probe 0.1", "linear probe 1"]
    methods = list(dict.fromkeys(summary["method"]))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        vals, errs = [], []
        for t in tasks:
            sel = summary[(summary["method"] == m) & (summary["task"] == t) & (summary["metric"] == "macro AUROC")]
            vals.append(float(sel["mean"].iloc[0]) if len(sel) else 0.0)
            errs.append(float(sel["std"].iloc[0]) if len(sel) else 0.0)
        ax.bar([i + j * width for i in range(len(tasks))], vals, width, yerr=errs, label=m, capsize=2)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks)
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("test macro AUROC")
    ax.set_title("vlp-medical demo: phantom chest radiographs, held-out test split")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "bench_auroc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
