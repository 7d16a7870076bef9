"""AUROC (Mann–Whitney, ties = 1/2), multi-label macro AUROC with class flags, and bootstrap CIs.

AUROC of one class = P(score of a random positive > score of a random negative) + 1/2 P(equal), computed from
mid-ranks: ``(sum of positive mid-ranks − P(P+1)/2) / (P·N)``. This equals the trapezoidal ROC area used by
torchmetrics' exact ``BinaryAUROC``/``MultilabelAUROC`` (checked in the tests). It is rank-based, so any
strictly increasing transform of the scores (logits vs sigmoid probabilities) gives the same value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from vlp_core.eval._checks import as_tensor, check_embeddings

__all__ = [
    "per_class_auroc",
    "binary_auroc",
    "multilabel_auroc",
    "macro_auroc",
    "bootstrap_ci",
    "bootstrap_macro_auroc",
]


def _check_scores_targets(scores: Any, targets: Any) -> tuple[Tensor, Tensor]:
    s = as_tensor(scores, "scores")
    t = as_tensor(targets, "targets")
    if s.ndim == 1:
        s = s[:, None]
    if t.ndim == 1:
        t = t[:, None]
    s = check_embeddings(s, "scores").double().cpu()
    if s.shape != t.shape:
        raise ValueError(f"scores {tuple(s.shape)} and targets {tuple(t.shape)} must have the same shape")
    t = t.cpu()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError("targets contain NaN/inf; mask missing labels before computing AUROC")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("targets must be binary (0/1 or bool); found other values")
    return s, t.bool()


def _auroc_columns(s: Tensor, t: Tensor) -> Tensor:
    """AUROC per column over the last-but-one axis. s, t: [..., N, C] (float64, bool) -> [..., C]; NaN if undefined.

    Mid-rank of x within its column = (#values < x + #values <= x + 1) / 2, via batched searchsorted on the sorted
    column; this handles ties without a per-column Python loop and vectorises over bootstrap replicates.
    """
    cols = s.transpose(-1, -2).contiguous()  # [..., C, N]
    tcols = t.transpose(-1, -2)
    sorted_cols, _ = torch.sort(cols, dim=-1)
    less = torch.searchsorted(sorted_cols, cols, right=False)
    leq = torch.searchsorted(sorted_cols, cols, right=True)
    midrank = (less + leq + 1).double() / 2
    n_pos = tcols.sum(dim=-1).double()
    n_neg = tcols.shape[-1] - n_pos
    rank_sum = (midrank * tcols).sum(dim=-1)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def per_class_auroc(scores: Tensor, targets: Tensor) -> Tensor:
    """AUROC of every column; NaN where a column has no positives or no negatives (caller decides what to do).

    Args:
        scores: [N, C] (or [N]) real scores, higher = more likely positive.
        targets: [N, C] (or [N]) binary labels.

    Returns:
        Float64 tensor [C].
    """
    s, t = _check_scores_targets(scores, targets)
    return _auroc_columns(s, t)


def binary_auroc(scores: Tensor, targets: Tensor) -> float:
    """AUROC of one binary task.

    Args:
        scores: [N] real scores.
        targets: [N] binary labels.

    Returns:
        AUROC in [0, 1].

    Raises:
        ValueError: No positives or no negatives (AUROC undefined).
    """
    s, t = _check_scores_targets(scores, targets)
    if s.shape[1] != 1:
        raise ValueError(f"binary_auroc expects 1-D inputs, got shape {tuple(s.shape)}; use multilabel_auroc")
    n_pos = int(t.sum())
    if n_pos == 0 or n_pos == t.shape[0]:
        raise ValueError(f"AUROC undefined: {n_pos} positives and {t.shape[0] - n_pos} negatives")
    return float(_auroc_columns(s, t)[0])


def multilabel_auroc(
    scores: Tensor,
    targets: Tensor,
    class_names: Sequence[str] | None = None,
    min_positives: int = 10,
    *,
    warn: bool = True,
) -> dict[str, Any]:
    """Per-class and macro AUROC for multi-label scores.

    Classes with zero positives or zero negatives have no AUROC: they are excluded from the macro mean and listed
    in ``excluded`` (with a warning). Classes with fewer than ``min_positives`` positives *or* negatives are kept
    in the macro but listed in ``flagged`` (their AUROC is noisy).

    Args:
        scores: [N, C] scores (sigmoid probabilities or logits; AUROC is rank-based). Never softmax across
            classes for multi-label problems: it couples independent labels.
        targets: [N, C] binary labels.
        class_names: C names (default ``"0".."C-1"``).
        min_positives: Flag threshold on the rarer of positives/negatives.
        warn: Emit a warning for excluded classes.

    Returns:
        ``{"macro": float, "per_class": {name: float (NaN if excluded)}, "n_positives": {name: int},
        "n_negatives": {name: int}, "flagged": [names], "excluded": [names], "n_classes_in_macro": int}``.

    Raises:
        ValueError: NaN scores, non-binary targets, shape mismatch, or no class with an AUROC.
    """
    s, t = _check_scores_targets(scores, targets)
    n_classes = s.shape[1]
    names = [str(c) for c in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} score columns")
    auc = _auroc_columns(s, t)
    n_pos = t.sum(dim=0).tolist()
    n_neg = [t.shape[0] - p for p in n_pos]
    excluded = [names[c] for c in range(n_classes) if n_pos[c] == 0 or n_neg[c] == 0]
    flagged = [
        names[c] for c in range(n_classes) if names[c] not in excluded and min(n_pos[c], n_neg[c]) < min_positives
    ]
    if excluded and warn:
        details = ", ".join(
            f"{names[c]} ({n_pos[c]} pos / {n_neg[c]} neg)" for c in range(n_classes) if names[c] in excluded
        )
        warnings.warn(
            f"AUROC undefined for {len(excluded)} class(es), excluded from the macro mean: {details}", stacklevel=2
        )
    defined = ~torch.isnan(auc)
    if not bool(defined.any()):
        raise ValueError("no class has both positives and negatives; macro AUROC is undefined")
    return {
        "macro": float(auc[defined].mean()),
        "per_class": {names[c]: float(auc[c]) for c in range(n_classes)},
        "n_positives": {names[c]: int(n_pos[c]) for c in range(n_classes)},
        "n_negatives": {names[c]: int(n_neg[c]) for c in range(n_classes)},
        "flagged": flagged,
        "excluded": excluded,
        "n_classes_in_macro": int(defined.sum()),
    }


def macro_auroc(scores: Tensor, targets: Tensor) -> float:
    """Macro AUROC over classes that have both positives and negatives (no warnings; for bootstrap loops).

    Args:
        scores: [N, C] (or [N]).
        targets: [N, C] (or [N]) binary.

    Returns:
        Mean of the defined per-class AUROCs; NaN if none is defined.
    """
    auc = per_class_auroc(scores, targets)
    defined = ~torch.isnan(auc)
    return float(auc[defined].mean()) if bool(defined.any()) else float("nan")


def _bootstrap_indices(n_rows: int, n: int, seed: int, batch: int) -> Iterator[Tensor]:
    """Yield [b, n_rows] row-index resamples, n in total, from one seeded CPU generator (device-independent)."""
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch, n - done)
        yield torch.randint(n_rows, (b, n_rows), generator=gen)
        done += b


def _summarise(point: float, reps: Tensor, n: int, alpha: float) -> dict[str, float]:
    valid = reps[~torch.isnan(reps)]
    n_invalid = n - valid.numel()
    if valid.numel() == 0:
        raise ValueError("the metric was undefined on every bootstrap replicate")
    if n_invalid:
        warnings.warn(
            f"{n_invalid} of {n} bootstrap replicates gave an undefined metric and were dropped", stacklevel=3
        )
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(valid.double(), q).tolist()
    return {
        "point": point,
        "low": low,
        "high": high,
        "std": float(valid.double().std(unbiased=True)) if valid.numel() > 1 else 0.0,
        "n_boot": int(valid.numel()),
        "alpha": alpha,
    }


def bootstrap_ci(
    metric_fn: Callable[[Tensor, Tensor], float],
    scores: Tensor,
    targets: Tensor,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of any metric, resampling rows with replacement.

    Args:
        metric_fn: ``metric_fn(scores_resampled, targets_resampled) -> float`` (NaN = undefined replicate).
        scores: [N, ...] scores.
        targets: [N, ...] targets (rows aligned with ``scores``).
        n: Number of bootstrap replicates.
        seed: Seed of the (CPU) generator drawing the resamples; same seed -> same CI.
        alpha: 1 − confidence level (0.05 -> 95 % CI from the 2.5 and 97.5 percentiles).

    Returns:
        ``{"point": metric on the full data, "low", "high", "std": bootstrap std, "n_boot": valid replicates,
        "alpha"}``. Replicates where the metric is NaN (e.g. a resample without positives) are dropped with a
        warning.
    """
    if n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    s = as_tensor(scores, "scores")
    t = as_tensor(targets, "targets")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"scores have {s.shape[0]} rows, targets {t.shape[0]}")
    check_embeddings(s.reshape(s.shape[0], -1), "scores")
    point = float(metric_fn(s, t))
    reps = []
    for idx_batch in _bootstrap_indices(s.shape[0], n, seed, batch=64):
        for idx in idx_batch:
            try:
                reps.append(float(metric_fn(s[idx.to(s.device)], t[idx.to(t.device)])))
            except ValueError:
                # A resample can lack positives or negatives (AUROC undefined): an undefined replicate, dropped.
                reps.append(float("nan"))
    return _summarise(point, torch.tensor(reps, dtype=torch.float64), n, alpha)


def bootstrap_macro_auroc(
    scores: Tensor,
    targets: Tensor,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    max_batch_elements: int = 2**24,
) -> dict[str, float]:
    """Percentile bootstrap CI of macro AUROC, vectorised over replicates (same resamples as :func:`bootstrap_ci`).

    In each replicate the macro mean is over the classes defined in that replicate. Classes excluded on the full
    data should be removed by the caller first (see :func:`multilabel_auroc`).

    Args:
        scores: [N, C] (or [N]) scores.
        targets: [N, C] (or [N]) binary labels.
        n: Number of replicates.
        seed: Generator seed.
        alpha: 1 − confidence level.
        max_batch_elements: Bound on replicates x N x C processed at once (memory).

    Returns:
        Same dict as :func:`bootstrap_ci` with ``metric_fn=macro_auroc``.
    """
    if n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    s, t = _check_scores_targets(scores, targets)
    point = macro_auroc(s, t)
    if math.isnan(point):
        raise ValueError("macro AUROC is undefined on the full data (no class with positives and negatives)")
    batch = max(1, max_batch_elements // max(1, s.numel()))
    reps = []
    # Same batch size as bootstrap_ci so the generator stream (and hence the resamples) is identical.
    for idx_batch in _bootstrap_indices(s.shape[0], n, seed, batch=64):
        for sub in idx_batch.split(batch):
            auc = _auroc_columns(s[sub], t[sub])  # [b, C]
            defined = ~torch.isnan(auc)
            summed = torch.where(defined, auc, torch.zeros_like(auc)).sum(dim=1)
            count = defined.sum(dim=1)
            reps.append(torch.where(count > 0, summed / count.clamp(min=1), torch.full_like(summed, float("nan"))))
    return _summarise(point, torch.cat(reps), n, alpha)
