"""Zero-shot abnormality detection, retrieval and linear probe for the CT CLIP.

Zero-shot: per class a positive / negative prompt pair ("X is present." / "X is not present."), softmax over the
pair (= sigmoid of the scaled difference, core's ``multilabel_zero_shot``), per-class AUROC + macro with a
bootstrap CI. Retrieval: report→volume and volume→report Recall@K (core's chunked ranks), volume→volume
CT-CLIP-style "MAP@K" (mean Jaccard of label vectors over the top K) *with the query excluded and the accumulator
reset for each K*, and standard mean average precision (relevant = same label vector).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "encode_volumes",
    "encode_texts",
    "zeroshot_scores",
    "zeroshot_table",
    "jaccard_map_at_k",
    "mean_average_precision",
    "retrieval_report",
    "write_table",
    "class_directions",
    "prompt_directions",
    "direction_alignment",
    "zeroshot_alignment",
    "report_text_zeroshot",
]


@torch.no_grad()
def encode_volumes(model: Any, dataset: Any, batch_size: int = 32, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Image-tower embeddings ``[N, D]`` and labels ``[N, C]`` of a dataset of ``{"image", "labels"}`` samples."""
    from tqdm.auto import tqdm

    from vlp_ct3d.ctrate import collate_volumes

    tower = model.towers["image"] if hasattr(model, "towers") else model
    was = tower.training
    tower.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_volumes)
    feats, labels = [], []
    device = next(tower.parameters()).device
    for batch in tqdm(loader, desc="encode volumes", disable=not progress):
        feats.append(tower(batch["image"].to(device)).embedding.float().cpu())
        labels.append(batch["labels"])
    tower.train(was)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 64, projected: bool = True) -> Tensor:
    """Text-tower embeddings ``[T, D]`` in the joint space, or (``projected=False``) the encoder's pooled
    embeddings ``[T, H]`` before the trained projection (:meth:`~vlp_ct3d.models.CTTextTower.pooled`).
    ``model`` is a CT CLIP or its text tower."""
    tower = model.towers["text"] if hasattr(model, "towers") else model
    embed = (lambda b: tower(b).embedding) if projected else tower.pooled
    was = tower.training
    tower.eval()
    out = torch.cat([embed(list(texts[i : i + batch_size])).float().cpu()
                     for i in range(0, len(texts), batch_size)])  # fmt: skip
    tower.train(was)
    return out


def _logit_scale(model: Any) -> float:
    for term in model.losses:
        if hasattr(term.loss, "logit_scale"):
            return float(term.loss.logit_scale.detach().exp().reshape(-1)[0])
    return 1.0


def zeroshot_scores(
    model: Any, features: Tensor, prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]]
) -> tuple[Tensor, list[str]]:
    """Scores ``[N, C]`` = P(present) from the softmax over each class's (positive, negative) prompt pair."""
    from vlp_core.eval import multilabel_zero_shot

    names = list(prompts)
    pos = {c: list(prompts[c][0]) for c in names}
    neg = {c: list(prompts[c][1]) for c in names}
    scores = multilabel_zero_shot(features, lambda t: encode_texts(model, t), pos, neg, mode="softmax",
                                  logit_scale=_logit_scale(model))  # fmt: skip
    return scores, names


def zeroshot_table(
    scores: Tensor, targets: Tensor, classes: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per-class AUROC, macro AUROC with a percentile bootstrap CI, and Youden sensitivity/specificity."""
    from vlp_core.eval import bootstrap_macro_auroc, multilabel_auroc

    res = multilabel_auroc(scores, targets, list(classes), min_positives=5, warn=False)
    keep = [i for i, c in enumerate(classes) if c not in res["excluded"]]
    ci = bootstrap_macro_auroc(scores[:, keep], targets[:, keep], n=n_boot, seed=seed) if n_boot else {}
    per = {}
    for i, c in enumerate(classes):
        s, t = scores[:, i].numpy(), targets[:, i].numpy().astype(bool)
        sens = spec = float("nan")
        if t.any() and (~t).any():
            thr = np.unique(s)
            tpr = np.array([(s[t] >= th).mean() for th in thr])
            fpr = np.array([(s[~t] >= th).mean() for th in thr])
            j = int(np.argmax(tpr - fpr))
            sens, spec = float(tpr[j]), float(1 - fpr[j])
        per[c] = {"auroc": float(res["per_class"][c]), "sensitivity": sens, "specificity": spec,
                  "n_pos": int(res["n_positives"][c]), "n_neg": int(res["n_negatives"][c])}  # fmt: skip
    return {"macro_auroc": float(res["macro"]), "ci_low": float(ci.get("low", float("nan"))),
            "ci_high": float(ci.get("high", float("nan"))), "per_class": per, "excluded": list(res["excluded"])}  # fmt: skip


def class_directions(embeddings: Tensor, labels: Tensor) -> Tensor:
    """Per-class direction of an embedding set: ``normalize(mean(ê | y_c = 1) − mean(ê | y_c = 0))`` over the
    L2-normalised rows ``ê``. A class without positives or without negatives gets a NaN row.

    Shapes:
        ``embeddings [N, D]``, ``labels [N, C]`` (0/1) → ``[C, D]``.
    """
    if embeddings.ndim != 2 or labels.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"need embeddings [N, D] and labels [N, C], got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}")  # fmt: skip
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    y = labels.bool()
    rows = []
    for c in range(y.shape[1]):
        pos, neg = y[:, c], ~y[:, c]
        if not pos.any() or not neg.any():
            rows.append(torch.full((e.shape[1],), float("nan")))
            continue
        rows.append(torch.nn.functional.normalize(e[pos].mean(0) - e[neg].mean(0), dim=0))
    return torch.stack(rows)


def prompt_directions(encode: EncodeFn, prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> Tensor:
    """Direction each positive/negative prompt pair scores along: ``normalize(p̂ − n̂)`` with ``p̂``, ``n̂`` the
    normalised means of the normalised prompt embeddings (the softmax over the pair ranks volumes by their cosine
    with exactly this vector, up to a positive factor).

    Returns:
        ``[C, D]`` in the order of ``prompts``.
    """
    normalize = torch.nn.functional.normalize

    def centre(texts: Sequence[str]) -> Tensor:  # normalised mean of the normalised prompt embeddings
        return normalize(normalize(encode(list(texts)).float(), dim=-1).mean(0), dim=0)

    return torch.stack([normalize(centre(pos) - centre(neg), dim=0) for pos, neg in prompts.values()])


def direction_alignment(a: Tensor, b: Tensor) -> Tensor:
    """Cosine matrix ``[C, C']`` between the rows of two direction sets (entry ``[k, j]``: direction ``k`` of ``a``
    against direction ``j`` of ``b``)."""
    return torch.nn.functional.normalize(a.float(), dim=-1) @ torch.nn.functional.normalize(b.float(), dim=-1).T


def zeroshot_alignment(
    model: Any,
    prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    reports: Sequence[str],
    report_labels: Tensor,
    volume_features: Tensor,
    volume_labels: Tensor,
) -> dict[str, Tensor]:
    """Why a zero-shot class works or fails, as three ``[C, C]`` cosine matrices in the joint space (rows and
    columns in the order of ``prompts``; a healthy class has a large diagonal entry that dominates its row):

    - ``"prompt vs report"``: each prompt pair's direction against the report-label directions of the text
      tower (does the pair point where reports with the finding lie?);
    - ``"report vs volume"``: report-label against volume-label directions (did training align the finding?);
    - ``"prompt vs volume"``: prompt-pair against volume-label directions, the quantity zero-shot scoring uses.

    ``reports``/``report_labels`` are training reports; ``volume_features`` (tower embeddings) and
    ``volume_labels`` any labelled volumes. A diagnostic: nothing here is fitted or selected. A finding the
    features do not encode still gets a direction, made of whatever co-occurs with it in the sample (with ~100
    volumes, chance co-occurrence alone gives cosines of ±0.3).
    """
    enc = lambda texts: encode_texts(model, list(texts))  # noqa: E731
    p = prompt_directions(enc, prompts)
    r = class_directions(enc(reports), report_labels)
    v = class_directions(volume_features, volume_labels)
    return {"prompt vs report": direction_alignment(p, r), "report vs volume": direction_alignment(r, v),
            "prompt vs volume": direction_alignment(p, v)}  # fmt: skip


def report_text_zeroshot(
    model: Any,
    prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    reports: Sequence[str],
    labels: Tensor,
    projected: bool = False,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Zero-shot scoring of the *reports' text* with the prompt pairs: how well the text side alone tells reports
    with a finding from reports without it (no volumes involved). A diagnostic, nothing is fitted or selected.

    Each report is scored like a volume, by cos(report, positive) − cos(report, negative) (the margin behind
    :func:`zeroshot_scores`'s softmax, so the same AUROC), with report and prompts embedded by the text tower:
    before its trained projection (``projected=False``: what the pretrained language model knows,
    :meth:`~vlp_ct3d.models.CTTextTower.pooled`) or in the joint space (``projected=True``).
    Volume zero-shot can only use the prompt-pair directions the text tower provides, so a class the prompts
    cannot find in the reports' own wording is unlikely to be found in the volumes.

    Args:
        model: a CT CLIP (``towers["text"]``) or a text tower.
        prompts: class → (positive prompts, negative prompts).
        reports: ``N`` report texts.
        labels: ``[N, C]`` report labels, columns in the order of ``prompts``.
        projected: score in the joint space instead of the encoder's pooled space.

    Returns:
        :func:`zeroshot_table`'s dict (macro and per-class AUROC, no bootstrap).
    """
    from vlp_core.eval import multilabel_zero_shot

    names = list(prompts)
    if labels.ndim != 2 or labels.shape != (len(reports), len(names)):
        raise ValueError(
            f"labels must be [{len(reports)}, {len(names)}] (reports x classes), got {tuple(labels.shape)}"
        )
    enc = lambda texts: encode_texts(model, list(texts), batch_size, projected)  # noqa: E731
    scores = multilabel_zero_shot(enc(reports), enc, {c: list(prompts[c][0]) for c in names},
                                  {c: list(prompts[c][1]) for c in names}, mode="diff")  # fmt: skip
    return zeroshot_table(scores, labels, names, n_boot=0)


def jaccard_map_at_k(features: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """CT-CLIP volume→volume "MAP@K", done as its name claims for that definition: for each query with ≥ 1 positive
    label, the mean Jaccard index between its label vector and those of its top-K neighbours (the query itself
    excluded), averaged over queries — computed afresh for every K.
    """
    f = torch.nn.functional.normalize(features.float(), dim=-1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    y = labels.float()
    inter = y @ y.T
    union = y.sum(1, keepdim=True) + y.sum(1) - inter
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    valid = y.sum(1) > 0
    order = sim.argsort(dim=1, descending=True)
    out = {}
    for k in ks:
        top = order[:, : min(k, len(f) - 1)]
        out[f"MAP@{k}"] = float(jac.gather(1, top)[valid].mean())
    return out


def mean_average_precision(sim: Tensor, relevant: Tensor, exclude_self: bool = False) -> float:
    """Standard mAP: mean over queries (with ≥ 1 relevant item) of the average of precision@rank at each relevant
    item's rank. ``sim [N, M]`` scores, ``relevant [N, M]`` bool; ``exclude_self`` removes the diagonal (N = M).
    Ties are broken by index (stable sort).
    """
    sim, rel = sim.float().clone(), relevant.bool().clone()
    if exclude_self:
        sim.fill_diagonal_(-float("inf"))
        rel.fill_diagonal_(False)
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    if exclude_self:
        order = order[:, :-1]  # the query itself sorts last
    r = rel.gather(1, order).float()
    hits = r.cumsum(1)
    ranks = torch.arange(1, r.shape[1] + 1, dtype=torch.float32)
    n_rel = r.sum(1)
    ap = (r * hits / ranks).sum(1) / n_rel.clamp_min(1)
    return float(ap[n_rel > 0].mean())


def retrieval_report(vol: Tensor, txt: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Report→volume and volume→report R@K (pair i is the positive of query i), volume→volume Jaccard MAP@K and
    standard mAP (relevant = identical label vector, query excluded)."""
    from vlp_core.eval import retrieval_metrics

    out: dict[str, float] = {}
    for name, q, g in (("report->volume", txt, vol), ("volume->report", vol, txt)):
        m = retrieval_metrics(q, g, ks=ks)
        out.update({f"{name} {k}": float(v) for k, v in m.items() if k.startswith("R@") or "rank" in k})
    out.update({f"volume->volume {k}": v for k, v in jaccard_map_at_k(vol, labels, ks).items()})
    f = torch.nn.functional.normalize(vol.float(), dim=-1)
    same = (labels[:, None, :] == labels[None, :, :]).all(-1)
    out["volume->volume mAP (same labels)"] = mean_average_precision(f @ f.T, same, exclude_self=True)
    return out


def write_table(rows: list[dict[str, Any]] | dict[str, Any], out: str | Path, name: str) -> list[Path]:
    """Write ``<out>/<name>.csv`` and ``<out>/<name>.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows if isinstance(rows, list) else [rows])
    frame.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2, default=float))
    return [out / f"{name}.csv", out / f"{name}.json"]


def linear_probe_auroc(
    train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], classes: Sequence[str]
) -> float:
    """Macro AUROC of a linear probe on frozen features (weight decay selected on ``val`` only, full training set)."""
    from vlp_core.eval import linear_probe

    keep = [i for i in range(len(classes)) if 0 < train[1][:, i].sum() < len(train[1])
            and 0 < val[1][:, i].sum() < len(val[1]) and 0 < test[1][:, i].sum() < len(test[1])]  # fmt: skip
    names = [classes[i] for i in keep]
    frames = [pd.DataFrame(y[:, keep].numpy().astype(int), columns=names) for _, y in (train, val, test)]
    table = linear_probe(train[0], frames[0], val[0], frames[1], test[0], frames[2], fractions=(1.0,), seeds=(0,),
                         class_names=names)  # fmt: skip
    return float(table["mean"].iloc[0])


def format_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


EncodeFn = Callable[[Sequence[str]], Tensor]
