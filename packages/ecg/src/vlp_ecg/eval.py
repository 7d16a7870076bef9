"""Zero-shot and linear-probe evaluation (no test-set leakage; labels aligned by name).

Zero-shot: class prompts (several templates averaged, core :func:`~vlp_core.eval.zero_shot_classifier`), cosine
scores, per-class AUROC and macro AUROC (core :func:`~vlp_core.eval.multilabel_auroc`; classes with too few
positives flagged), percentile-bootstrap confidence intervals. Linear probe: frozen ECG embeddings, core
:func:`~vlp_core.eval.linear_probe` at 1/10/100 % of the training split with model selection on the validation
split only; label matrices are passed as DataFrames with **named** columns, so the column order cannot scramble
classes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlp_core.eval import (
    bootstrap_macro_auroc,
    encode_dataset,
    find_logit_scale,
    linear_probe,
    multilabel_auroc,
    zero_shot_classifier,
    zero_shot_scores,
)

__all__ = [
    "CLASS_PROMPTS",
    "DEFAULT_TEMPLATES",
    "class_prompts",
    "encode_ecg",
    "format_table",
    "probe_evaluate",
    "probe_from_features",
    "write_results",
    "zeroshot_evaluate",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "ecg showing {}", "{} on the electrocardiogram", "the ecg shows {}")

# Plain-English class descriptions (SCP codes and PTB-XL superclasses); the prompts are never report sentences.
CLASS_PROMPTS: dict[str, list[str]] = {
    "NORM": ["normal ecg", "normal electrocardiogram"],
    "SR": ["sinus rhythm", "normal sinus rhythm"],
    "SBRAD": ["sinus bradycardia", "slow heart rate with sinus rhythm"],
    "STACH": ["sinus tachycardia", "fast heart rate with sinus rhythm"],
    "AFIB": ["atrial fibrillation", "irregular rhythm without p waves"],
    "AFLT": ["atrial flutter"],
    "1AVB": ["first degree atrioventricular block", "prolonged pr interval"],
    "PVC": ["premature ventricular complexes", "ventricular extrasystoles"],
    "CLBBB": ["left bundle branch block", "complete left bundle branch block"],
    "CRBBB": ["right bundle branch block", "complete right bundle branch block"],
    "STE_": ["st segment elevation", "st elevation"],
    "STD_": ["st segment depression"],
    "MI": ["myocardial infarction"],
    "STTC": ["st/t change", "st segment and t wave changes"],
    "CD": ["conduction disturbance", "bundle branch block or av block"],
    "HYP": ["ventricular hypertrophy"],
    "_AVB": ["atrioventricular block"],
}


def class_prompts(classes: Sequence[str], descriptions: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Prompts per class: :data:`CLASS_PROMPTS`, else a given description (e.g. ``scp_statements.csv``), else the
    class name itself lower-cased."""
    out = {}
    for c in classes:
        if c in CLASS_PROMPTS:
            out[c] = list(CLASS_PROMPTS[c])
        elif descriptions and c in descriptions:
            out[c] = [str(descriptions[c]).lower()]
        else:
            out[c] = [str(c).lower().strip("_")]
    return out


def encode_ecg(model: Any, dataset: Dataset, batch_size: int = 128, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Frozen ECG embeddings ``[N, D]`` (not normalised) and labels ``[N, K]`` of an ECG dataset, in order.

    Core's :func:`~vlp_core.eval.encode_dataset` on the ``"ecg"`` field with the ECG collate.
    """
    from vlp_ecg.datasets import collate_ecg

    feats, labels = encode_dataset(model, dataset, "ecg", collate_fn=collate_ecg, batch_size=batch_size,
                                   progress=progress)  # fmt: skip
    assert labels is not None
    return feats, labels


def zeroshot_evaluate(
    model: Any,
    dataset: Dataset,
    classes: Sequence[str] | None = None,
    prompts: dict[str, list[str]] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    n_boot: int = 1000,
    min_positives: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
    exclusive_groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Zero-shot multi-label classification.

    Args:
        model: Pretrainer with ``ecg`` and ``text`` towers.
        dataset: evaluation dataset (its ``classes`` define the label columns, by name).
        classes: subset/order of classes to evaluate (default: all dataset classes with a positive).
        prompts: ``{class: [prompt, ...]}`` (default :func:`class_prompts`); each prompt is expanded with every
            template, embeddings are averaged and re-normalised.
        templates: ``str.format`` templates with one ``{}``.
        n_boot: bootstrap replicates for the CIs (0 disables).
        min_positives: classes with fewer positives (or negatives) are flagged.
        seed: bootstrap seed.
        exclusive_groups: groups of mutually exclusive classes (e.g. the rhythms SR/SBRAD/STACH/AFIB): within a
            group the score is the softmax over the group's prompts at the model's learned logit scale (standard
            CLIP single-label zero-shot); other classes keep the plain cosine score. Independent labels are never
            softmaxed together.

    Returns:
        ``{"macro_auroc", "macro_ci": [low, high], "per_class": {c: {"auroc", "low", "high", "n_pos"}},
        "flagged", "excluded", "n"}``.
    """
    ds_classes = list(dataset.classes)  # type: ignore[attr-defined]
    feats, labels = encode_ecg(model, dataset, batch_size, progress)
    if classes is None:
        classes = [c for j, c in enumerate(ds_classes) if labels[:, j].sum() > 0]
    col = {c: j for j, c in enumerate(ds_classes)}
    missing = [c for c in classes if c not in col]
    if missing:
        raise KeyError(f"classes {missing} are not labels of this dataset (has {ds_classes})")
    y = labels[:, [col[c] for c in classes]]  # by name
    prompts = prompts or class_prompts(classes)
    names = list(classes)
    text = model.towers["text"]

    def encode_text(texts: list[str]) -> Tensor:
        with torch.no_grad():
            return text(texts).embedding.float().cpu()

    was_training = model.training
    model.eval()
    # Expand every prompt with every template, then average per class (prompt x template ensemble).
    classifier = torch.cat([zero_shot_classifier(encode_text, prompts[c], list(templates)).mean(0, keepdim=True)
                            for c in names])  # fmt: skip
    classifier = torch.nn.functional.normalize(classifier, dim=-1)
    model.train(was_training)
    scores = zero_shot_scores(torch.nn.functional.normalize(feats, dim=-1), classifier)
    for group in exclusive_groups or []:
        idx = [names.index(c) for c in group if c in names]
        if len(idx) > 1:
            scores[:, idx] = (find_logit_scale(model) * scores[:, idx]).softmax(-1)
    res = multilabel_auroc(scores, y, names, min_positives=min_positives, warn=False)
    per_class: dict[str, dict[str, float]] = {}
    for j, c in enumerate(names):
        entry = {"auroc": res["per_class"][c], "n_pos": res["n_positives"][c], "low": math.nan, "high": math.nan}
        if n_boot and c not in res["excluded"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # One column through the vectorised bootstrap: the same resamples and n as the macro CI.
                ci = bootstrap_macro_auroc(scores[:, j : j + 1], y[:, j : j + 1], n=n_boot, seed=seed)
            entry["low"], entry["high"] = ci["low"], ci["high"]
        per_class[c] = entry
    keep = [j for j, c in enumerate(names) if c not in res["excluded"]]
    macro_ci = [math.nan, math.nan]
    if n_boot and keep:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap_macro_auroc(scores[:, keep], y[:, keep], n=n_boot, seed=seed)
        macro_ci = [ci["low"], ci["high"]]
    return {"macro_auroc": res["macro"], "macro_ci": macro_ci, "per_class": per_class, "flagged": res["flagged"],
            "excluded": res["excluded"], "n": int(y.shape[0]), "classes": names}  # fmt: skip


def probe_evaluate(
    model: Any,
    train_set: Dataset,
    val_set: Dataset,
    test_set: Dataset,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 128,
    progress: bool = False,
) -> pd.DataFrame:
    """Linear probe on frozen ECG embeddings; selection on ``val_set`` only, test evaluated once per fit.

    Label matrices become DataFrames whose columns are each dataset's own class names, so the core probe aligns
    them **by name** (a split whose columns are in another order cannot scramble classes).

    Returns:
        Core :func:`~vlp_core.eval.linear_probe` table (one row per fraction: mean ± std test macro AUROC).
    """
    frames, feats = [], []
    for ds in (train_set, val_set, test_set):
        f, y = encode_ecg(model, ds, batch_size, progress)
        feats.append(f)
        frames.append(pd.DataFrame(y.numpy(), columns=list(ds.classes)))  # type: ignore[attr-defined]
    return probe_from_features(feats, frames, fractions, seeds)


def probe_from_features(
    feats: Sequence[Tensor],
    frames: Sequence[pd.DataFrame],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
) -> pd.DataFrame:
    """Linear probe from precomputed features.

    Args:
        feats: train, val, test features ``[N_s, D]``.
        frames: train, val, test label DataFrames with one **named** 0/1 column per class (any column order).

    Returns:
        Core :func:`~vlp_core.eval.linear_probe` table.
    """
    names = list(frames[0].columns)
    usable = [c for c in names if all(c in fr.columns and 0 < fr[c].sum() < len(fr) for fr in frames)]
    if not usable:
        raise ValueError("no class has both positives and negatives in train, val and test")
    sel = [fr[usable] for fr in frames]  # selected (and so aligned) by name
    return linear_probe(feats[0], sel[0], feats[1], sel[1], feats[2], sel[2], fractions=fractions, seeds=seeds,
                        multilabel=True)  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of a :func:`zeroshot_evaluate` result."""
    lines = ["| class | AUROC | 95% CI | positives |", "|---|---|---|---|"]
    for c, e in result["per_class"].items():
        flag = " (flagged: few positives)" if c in result["flagged"] else ""
        lines.append(f"| {c}{flag} | {e['auroc']:.3f} | [{e['low']:.3f}, {e['high']:.3f}] | {e['n_pos']} |")
    lo, hi = result["macro_ci"]
    lines.append(f"| **macro** | **{result['macro_auroc']:.3f}** | [{lo:.3f}, {hi:.3f}] | n={result['n']} |")
    return "\n".join(lines)


def write_results(result: dict[str, Any] | pd.DataFrame, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write ``<name>.json`` and ``<name>.csv`` under ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(result, pd.DataFrame):
        result.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.json").write_text(result.to_json(orient="records", indent=2))
    else:
        rows = [{"class": c, **e} for c, e in result["per_class"].items()]
        rows.append({"class": "macro", "auroc": result["macro_auroc"], "low": result["macro_ci"][0],
                     "high": result["macro_ci"][1], "n_pos": None})  # fmt: skip
        pd.DataFrame(rows).to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    return [out / f"{name}.json", out / f"{name}.csv"]
