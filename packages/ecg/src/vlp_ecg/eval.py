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

import numpy as np
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
    "EXCLUSIVE_RHYTHMS",
    "LabelTextLeakageError",
    "check_label_text",
    "evaluate_model",
    "format_suite",
    "random_encoder_control",
    "random_encoder_controls",
    "CLASS_PROMPTS",
    "DEFAULT_TEMPLATES",
    "DESCRIPTIVE_EXTRA_PROMPTS",
    "DESCRIPTIVE_PROMPTS",
    "DESCRIPTIVE_TEMPLATES",
    "PROMPT_SETS",
    "prompt_set",
    "class_prompts",
    "encode_ecg",
    "format_table",
    "probe_evaluate",
    "probe_from_features",
    "write_results",
    "zeroshot_evaluate",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "ecg showing {}", "{} on the electrocardiogram", "the ecg shows {}")

# Clinical class names (SCP codes and PTB-XL superclasses), as in MELP/MERL's CKEPE prompts. These are the standard
# terms, so they DO occur in reports (synthetic and real); the descriptive set below is the one disjoint from them.
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


# Descriptive prompts written from diagnostic criteria (rate, regularity, atrial activity, AV delay, complex width
# and shape, the segment after the complex) in lay and physiological words. None of their content words occurs in
# any report the generator writes (``tests/test_eval_protocol.py`` checks it against
# :func:`vlp_ecg.synth.report_vocabulary`), so a model can only score well by transferring meaning, not wording.
DESCRIPTIVE_PROMPTS: dict[str, list[str]] = {
    "NORM": [
        "healthy heart recording showing nothing amiss",
        "heart recording of a healthy person, all timings typical",
    ],
    "SR": [
        "steady heartbeat from the natural pacemaker, sixty to one hundred per minute",
        "evenly spaced heartbeats at an ordinary pace, each preceded by a small upright bump",
    ],
    "SBRAD": [
        "slow steady heartbeat under sixty per minute",
        "heart pacing slowly, fewer than sixty heartbeats each minute, evenly spaced",
    ],
    "STACH": [
        "fast steady heartbeat above one hundred per minute",
        "heart pacing quickly, more than one hundred heartbeats each minute, evenly spaced",
    ],
    "AFIB": [
        "chaotic, totally uneven heartbeat spacing with a quivering line between heartbeats",
        "haphazard heartbeat timing, small upright bump before each heartbeat absent, fine trembling undulation",
    ],
    "1AVB": [
        "long delay between the small upright bump and the tall spike, over two hundred milliseconds",
        "slowed transmission from upper to lower heart chambers, lengthened gap before each spike",
    ],
    "PVC": [
        "early broad bizarre heartbeats arising from the lower chambers, followed by a compensatory pause",
        "extra early heartbeats originating low in the heart, misshapen and broad",
    ],
    "CLBBB": [
        "broad slurred M-shaped spikes over the lateral chest electrodes, deep downward spikes near the sternum",
        "slowed activation of the leftward heart wall, broad notched spikes",
    ],
    "CRBBB": [
        "broad spikes with a rabbit-ear double peak near the sternum and a slurred terminal dip laterally",
        "slowed activation of the rightward heart wall, double-peaked spikes near the sternum",
    ],
    "STE_": [
        "raised plateau after the spike, lifted above the isoelectric line, pointing to heart muscle damage",
        "stretch between spike and recovery bump lifted above the flat line",
    ],
    "MI": ["dead heart muscle scar from a heart attack"],
    "STTC": ["altered recovery phase of the heartbeat"],
    "CD": ["impulse transmission disturbance inside the heart"],
    "HYP": ["thickened enlarged heart chamber walls"],
}
# Templates for the descriptive set avoid report words too ("ecg" is one).
DESCRIPTIVE_TEMPLATES: tuple[str, ...] = ("{}", "a heart recording showing {}", "electrocardiogram: {}")
# Three more criteria phrasings per demo class, same rules (no report word): with DESCRIPTIVE_PROMPTS they form the
# larger ensemble measured in ``vlp-ecg text-study`` (five phrasings x three templates per class).
DESCRIPTIVE_EXTRA_PROMPTS: dict[str, list[str]] = {
    "SR": [
        "calm orderly heartbeat at a usual speed from the natural pacemaker",
        "evenly timed heartbeats between sixty and one hundred each minute",
        "orderly pacing started high in the upper chambers at a typical speed",
    ],
    "SBRAD": [
        "sluggish but orderly heartbeat, below sixty each minute",
        "unhurried evenly timed heartbeats, slower than sixty per minute",
        "slow pacing started by the natural pacemaker",
    ],
    "STACH": [
        "quick orderly heartbeat, above one hundred each minute",
        "hurried evenly timed heartbeats, faster than one hundred per minute",
        "racing pacing started by the natural pacemaker",
    ],
    "AFIB": [
        "erratic heartbeat timing without organised upper-chamber activity",
        "unpredictable gaps between heartbeats and a wavy quivering line",
        "upper chambers quivering instead of contracting, heartbeats at random intervals",
    ],
    "1AVB": [
        "sluggish passage of each impulse from upper to lower chambers, every impulse still getting through",
        "extended pause between upper-chamber activation and the main spike",
        "lengthened delay before each main spike, more than two hundred milliseconds",
    ],
    "PVC": [
        "sporadic early misshapen broad heartbeats from the lower chambers",
        "extra heartbeats coming too soon, broad and bizarre, from the lower heart",
        "an early broad heartbeat followed by a long pause",
    ],
    "CLBBB": [
        "leftward wiring failure widening every spike, notched tops over the lateral chest electrodes",
        "broad spikes with notched tops, leftward heart wall activated late",
        "leftward heart wall activated late and slowly",
    ],
    "CRBBB": [
        "rightward wiring failure, broad spikes with a double peak near the sternum",
        "rightward heart wall activated late, rabbit-ear peaks",
        "double-humped broad spikes near the breastbone",
    ],
    "STE_": [
        "lifted stretch after the spike, raised above the flat line",
        "raised plateau between spike and recovery hump, pointing to heart muscle damage",
        "stretch after each spike sitting higher than the flat line",
    ],
}
PROMPT_SETS: dict[str, tuple[dict[str, list[str]], tuple[str, ...]]] = {
    "clinical": (CLASS_PROMPTS, DEFAULT_TEMPLATES),
    "descriptive": (DESCRIPTIVE_PROMPTS, DESCRIPTIVE_TEMPLATES),
    "descriptive_ensemble": (
        {c: DESCRIPTIVE_PROMPTS[c] + DESCRIPTIVE_EXTRA_PROMPTS.get(c, []) for c in DESCRIPTIVE_PROMPTS},
        DESCRIPTIVE_TEMPLATES,
    ),
}
"""Named prompt sets: ``clinical`` (class names, as MELP/MERL-style CKEPE prompts), ``descriptive`` (criteria
wording disjoint from the training reports) and ``descriptive_ensemble`` (the descriptive set plus
:data:`DESCRIPTIVE_EXTRA_PROMPTS`, still disjoint). Each is ``(prompts per class, templates)``."""


def prompt_set(name: str, classes: Sequence[str], descriptions: dict[str, str] | None = None
               ) -> tuple[dict[str, list[str]], tuple[str, ...]]:  # fmt: skip
    """Prompts and templates of a named set for ``classes`` (see :data:`PROMPT_SETS`).

    Raises:
        KeyError: for an unknown set, or a class the descriptive set has no description for.
    """
    if name not in PROMPT_SETS:
        raise KeyError(f"unknown prompt set {name!r}; available: {sorted(PROMPT_SETS)}")
    if name == "clinical":
        return class_prompts(classes, descriptions), DEFAULT_TEMPLATES
    prompts, templates = PROMPT_SETS[name]
    missing = [c for c in classes if c not in prompts]
    if missing:
        raise KeyError(f"the {name} prompt set has no description of {missing}; use prompt_set='clinical'")
    return {c: list(prompts[c]) for c in classes}, templates


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


# ------------------------------------------------------------------------------------------- one protocol for all
EXCLUSIVE_RHYTHMS: tuple[str, ...] = ("SR", "SBRAD", "STACH", "AFIB", "AFLT")
"""Rhythm classes scored as one mutually exclusive group (softmax over their prompts at the learned scale)."""


class LabelTextLeakageError(RuntimeError):
    """Zero-shot asked on a model/store whose pretraining text was written from the very label statements used as
    prompts (PTB-XL ``text="statements"``): that is supervised classification, not zero-shot."""


def check_label_text(text_source: str | None, allow_label_text: bool = False) -> bool:
    """Leakage guard. Returns True when the evaluation is genuinely zero-shot.

    Args:
        text_source: how the pretraining text was built (``"report"``, ``"statements"``, ``None`` = unknown).
        allow_label_text: evaluate anyway; the result is then labelled as *not* zero-shot.

    Raises:
        LabelTextLeakageError: ``text_source == "statements"`` without ``allow_label_text``.
    """
    if text_source != "statements":
        return True
    if not allow_label_text:
        raise LabelTextLeakageError(
            "refusing zero-shot: the pretraining text was built from the SCP statement descriptions of each record's "
            "own labels (text='statements'), and the prompts are those same descriptions, so the score measures "
            "supervised classification, not zero-shot transfer. Pretrain on free-text reports (text='report'), or "
            "pass --allow_label_text true to get the number labelled as NOT zero-shot."
        )
    return False


def rhythm_groups(classes: Sequence[str]) -> list[list[str]]:
    """The mutually exclusive rhythm group among ``classes`` (empty when fewer than two rhythms are evaluated)."""
    group = [c for c in classes if c in EXCLUSIVE_RHYTHMS]
    return [group] if len(group) > 1 else []


def evaluate_model(
    model: Any,
    test_set: Dataset,
    classes: Sequence[str],
    prompt_sets: Sequence[str] = ("clinical", "descriptive"),
    descriptions: dict[str, str] | None = None,
    n_boot: int = 1000,
    min_positives: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """The zero-shot protocol shared by ``vlp-ecg zeroshot``, the demo, its controls and the ablation.

    Same settings everywhere: prompt x template ensembles of each named prompt set, the rhythm classes among
    ``classes`` scored as one exclusive group (:data:`EXCLUSIVE_RHYTHMS`), every other class by cosine, per-class
    and macro AUROC with percentile-bootstrap 95 % CIs. Prompt sets lacking a class are skipped (recorded under
    ``"skipped_prompt_sets"`` of the first result).

    Returns:
        ``{prompt set name: zeroshot_evaluate result}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in prompt_sets:
        try:
            prompts, templates = prompt_set(name, classes, descriptions)
        except KeyError:
            continue
        out[name] = zeroshot_evaluate(model, test_set, list(classes), prompts=prompts, templates=templates,
                                      n_boot=n_boot, min_positives=min_positives, seed=seed, batch_size=batch_size,
                                      progress=progress, exclusive_groups=rhythm_groups(classes))  # fmt: skip
        out[name]["prompt_set"] = name
    return out


def random_encoder_control(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` whose ECG tower is re-initialised at random (text tower and projections kept): the
    zero-shot score of this control must be near 0.5, otherwise labels leak through something other than the
    ECG encoder."""
    import copy

    control = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for m in control.towers["ecg"].modules():
        if m is not control.towers["ecg"] and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    torch.random.set_rng_state(gen_state)
    return control


def random_encoder_controls(
    model: Any,
    test_set: Dataset,
    classes: Sequence[str],
    n_inits: int = 5,
    seed: int = 0,
    n_boot: int = 200,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_model` averaged over ``n_inits`` random re-initialisations of the ECG tower.

    One random encoder is one draw: its features still carry signal (heart rate, amplitude), and a random linear
    read-out of them scores a class above or below 0.5 by chance, so a single control can sit well away from 0.5
    without anything leaking. The mean over several draws estimates the control's expectation (0.5 when labels
    reach the score only through the ECG encoder); ``macro_ci`` is replaced by the range of the draws' macro AUROCs
    and ``macro_sd`` / ``macro_draws`` record the spread.

    Returns:
        ``{prompt set name: result}`` shaped like :func:`evaluate_model`'s, per-class AUROCs averaged too.
    """
    draws = [
        evaluate_model(random_encoder_control(model, seed + k), test_set, classes, n_boot=n_boot, seed=seed, **kwargs)
        for k in range(n_inits)
    ]
    out: dict[str, dict[str, Any]] = {}
    for name, first in draws[0].items():
        macros = [d[name]["macro_auroc"] for d in draws]
        res = dict(first)
        res["macro_auroc"] = float(np.mean(macros))
        res["macro_ci"] = [float(min(macros)), float(max(macros))]
        res["macro_sd"] = float(np.std(macros, ddof=1)) if len(macros) > 1 else 0.0
        res["macro_draws"] = [float(m) for m in macros]
        res["per_class"] = {
            c: {**e, "auroc": float(np.mean([d[name]["per_class"][c]["auroc"] for d in draws]))}
            for c, e in first["per_class"].items()
        }
        out[name] = res
    return out


def format_suite(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of evaluation rows ``{"model", "evaluation", "macro", "low", "high", "min_class", "note"}``."""
    lines = ["| model | evaluation | macro AUROC | 95 % CI | weakest class | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{r['low']:.3f}, {r['high']:.3f}]" if not math.isnan(r.get("low", math.nan)) else "-"
        weak = r.get("min_class") or "-"
        lines.append(f"| {r['model']} | {r['evaluation']} | {r['macro']:.3f} | {ci} | {weak} | {r.get('note', '')} |")
    return "\n".join(lines)


def suite_row(model_name: str, res: dict[str, Any], note: str = "") -> dict[str, Any]:
    """One :func:`format_suite` row from a :func:`zeroshot_evaluate` result."""
    per = {c: e["auroc"] for c, e in res["per_class"].items() if c not in res["excluded"]}
    worst = min(per, key=per.get) if per else None
    return {"model": model_name, "evaluation": f"zero-shot, {res.get('prompt_set', 'prompts')} prompts",
            "macro": res["macro_auroc"], "low": res["macro_ci"][0], "high": res["macro_ci"][1],
            "min_class": f"{worst} {per[worst]:.3f}" if worst else None, "min_auroc": per[worst] if worst else math.nan,
            "note": note}  # fmt: skip
