"""The PTB-XL benchmark recipe's evaluation: zero-shot on the four standard tasks and a linear probe at 1/10/100 %,
laid out like MERL's and MELP's tables with their published numbers beside ours.

Folds 1-8 train, 9 validation (probe model selection only), 10 test; labels aggregated by statement name
(:func:`vlp_ecg.datasets.aggregate_scp`), records without a label of the task dropped per task (as the benchmark).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["PTBXL_TASKS", "PUBLISHED", "ptbxl_benchmark"]

PTBXL_TASKS: tuple[str, ...] = ("superclass", "subclass", "form", "rhythm")

# Published AUROC (%) from the reference notes (shared/reference/ecg.md §2.5, §3.1); the marker says how firm each is.
PUBLISHED: dict[str, dict[tuple[str, str], tuple[float, str]]] = {
    "MERL (ResNet18)": {
        ("zero-shot", "superclass"): (74.2, "secondary"),
        ("zero-shot", "subclass"): (75.7, "unverified"),
        ("zero-shot", "form"): (65.9, "unverified"),
        ("zero-shot", "rhythm"): (78.5, "unverified"),
        ("probe 1%", "superclass"): (82.39, "secondary"),
        ("probe 1%", "subclass"): (64.90, "secondary"),
        ("probe 1%", "form"): (58.26, "secondary"),
        ("probe 1%", "rhythm"): (53.33, "secondary"),
        ("probe 100%", "superclass"): (88.01, "secondary, MELP paper"),
        ("probe 100%", "rhythm"): (92.31, "secondary, MELP paper"),
    },
    "MELP": {
        ("probe 1%", "superclass"): (87.63, "secondary"),
        ("probe 1%", "rhythm"): (87.72, "secondary"),
        ("probe 100%", "superclass"): (89.44, "secondary"),
        ("probe 100%", "rhythm"): (93.66, "secondary"),
    },
}


def ptbxl_benchmark(
    ckpt: str,
    root: str,
    sampling_rate: int = 500,
    duration: float = 10.0,
    tasks: tuple[str, ...] = PTBXL_TASKS,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    n_boot: int = 1000,
    skip_bad: bool = False,
    text: str = "report",
    allow_label_text: bool = False,
) -> tuple[pd.DataFrame, str]:
    """Run zero-shot (clinical prompts, SCP descriptions for codes without one) and the linear probe per task.

    Returns:
        ``(long table with columns model/evaluation/task/auroc/low/high/source, markdown table)``.
    """
    from vlp_ecg.datasets import ECGTextDataset, LoadConfig, load_scp_statements, ptbxl_index
    from vlp_ecg.eval import check_label_text, encode_ecg, evaluate_model, probe_from_features
    from vlp_ecg.models import load_model

    zero_shot_ok = check_label_text(text, allow_label_text)
    model = load_model(ckpt)
    fs = float(getattr(model.towers["ecg"], "fs", sampling_rate))
    desc = load_scp_statements(root)["description"].astype(str).to_dict()
    cfg = LoadConfig(target_fs=fs, duration=duration)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        index = ptbxl_index(root, sampling_rate=sampling_rate, labels=task, drop_unlabelled=True)
        sets = {s: ECGTextDataset(index, s, cfg=cfg, skip_bad=skip_bad) for s in ("train", "val", "test")}
        test = sets["test"]
        classes = [c for c in test.classes if 0 < test.labels[:, test.classes.index(c)].sum() < len(test)]
        res = evaluate_model(model, test, classes, prompt_sets=("clinical",), descriptions=desc, n_boot=n_boot)
        r = res["clinical"]
        label = "zero-shot" if zero_shot_ok else "NOT zero-shot (label text)"
        rows.append({"model": "vlp-ecg", "evaluation": label, "task": task, "auroc": 100 * r["macro_auroc"],
                     "low": 100 * r["macro_ci"][0], "high": 100 * r["macro_ci"][1], "source": "this run"})  # fmt: skip
        feats, frames = [], []
        for ds in sets.values():
            f, y = encode_ecg(model, ds)
            feats.append(f)
            frames.append(pd.DataFrame(y.numpy(), columns=list(ds.classes)))
        probe = probe_from_features(feats, frames, fractions=fractions, seeds=seeds)
        for _, p in probe.iterrows():
            rows.append({"model": "vlp-ecg", "evaluation": f"probe {p['fraction']:.0%}", "task": task,
                         "auroc": 100 * float(p["mean"]), "low": math.nan, "high": math.nan,
                         "source": f"this run ({p['summary']})"})  # fmt: skip
    for name, numbers in PUBLISHED.items():
        for (ev, task), (value, how) in numbers.items():
            if task in tasks:
                rows.append({"model": name, "evaluation": ev, "task": task, "auroc": value, "low": math.nan,
                             "high": math.nan, "source": f"published [{how}]"})  # fmt: skip
    frame = pd.DataFrame(rows)
    return frame, _markdown(frame, tasks)


def _markdown(frame: pd.DataFrame, tasks: tuple[str, ...]) -> str:
    """MERL/MELP layout: one row per (model, evaluation), one column per task, AUROC in %."""
    header = "| model | evaluation | " + " | ".join(tasks) + " |"
    lines = [header, "|---|---|" + "---|" * len(tasks)]
    for (model, ev), grp in frame.groupby(["model", "evaluation"], sort=False):
        cells = []
        for t in tasks:
            hit = grp[grp["task"] == t]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            ci = f" ({r['low']:.1f}–{r['high']:.1f})" if not math.isnan(r["low"]) else ""
            mark = "" if r["source"].startswith("this run") else "*" if "unverified" in r["source"] else "†"
            cells.append(f"{r['auroc']:.2f}{ci}{mark}")
        lines.append(f"| {model} | {ev} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("† published, secondary source; * published, unverified (reference notes). Ours: fold 10, 95 % CI.")
    return "\n".join(lines)
