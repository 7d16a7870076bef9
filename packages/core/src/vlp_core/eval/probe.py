"""Linear probing on frozen features at several training-data fractions over fixed seeds.

Protocol (per fraction and seed): draw a deterministic, stratified-ish subset of the training rows; standardise
features with that subset's statistics; fit a logistic regression (softmax cross-entropy for multi-class, sigmoid
BCE for multi-label) for every weight decay in a small grid; select the weight decay with the best **validation**
metric (ties -> the larger decay); evaluate the selected model **once** on the test set. The test set takes no part
in selection or fitting. Results are reported as mean ± std (population std, ddof=0) over seeds.

Metrics: multi-label -> macro AUROC of per-class *sigmoid* scores (the reference code used softmax across classes,
which couples independent labels); multi-class -> top-1 accuracy (torchmetrics) or macro one-vs-rest AUROC.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from vlp_core.eval._checks import as_tensor, check_embeddings
from vlp_core.eval.classification import multilabel_auroc

__all__ = ["LinearProbeModel", "fit_linear_probe", "probe_subset_indices", "linear_probe", "DEFAULT_WEIGHT_DECAYS"]

DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class LinearProbeModel:
    """A fitted logistic-regression probe.

    Attributes:
        weight: [D, C].
        bias: [C].
        mean: [D] feature mean of the training subset (standardisation).
        std: [D] feature std of the training subset.
        multilabel: Sigmoid (True) or softmax (False) outputs.
        weight_decay: The L2 strength it was trained with.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    multilabel: bool
    weight_decay: float

    def logits(self, features: Tensor) -> Tensor:
        """Logits [N, C] for features [N, D]."""
        x = (check_embeddings(features, "features").to(self.weight) - self.mean) / self.std
        return x @ self.weight + self.bias

    def predict_scores(self, features: Tensor) -> Tensor:
        """Sigmoid (multi-label) or softmax (multi-class) probabilities [N, C] for features [N, D]."""
        logits = self.logits(features)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


def fit_linear_probe(
    features: Tensor,
    targets: Tensor,
    *,
    multilabel: bool,
    num_classes: int | None = None,
    weight_decay: float = 0.0,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    lr: float | None = None,
    standardize: bool = True,
) -> LinearProbeModel:
    """Fit a full-batch logistic regression on frozen features (zero init, hence deterministic).

    Args:
        features: [N, D].
        targets: Multi-label: [N, C] in {0, 1}; multi-class: [N] class indices.
        multilabel: Sigmoid BCE (True) or softmax cross-entropy (False).
        num_classes: C for multi-class (default ``targets.max() + 1``).
        weight_decay: L-BFGS: L2 penalty ``weight_decay / 2 * ||W||^2`` added to the mean loss (bias not
            penalised). AdamW: decoupled decay on W.
        optimizer: "lbfgs" (strong-Wolfe line search, up to ``max_iter`` iterations) or "adamw" (``max_iter``
            full-batch steps).
        max_iter: Iterations / steps.
        lr: Learning rate (default 1.0 for L-BFGS, 1e-2 for AdamW).
        standardize: Standardise features with their mean/std (computed on these training rows only).

    Returns:
        The fitted :class:`LinearProbeModel` (float64 parameters, on the features' device).
    """
    x = check_embeddings(features, "train features").double()
    device = x.device
    if multilabel:
        y = as_tensor(targets, "targets").to(device=device, dtype=torch.float64)
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"multi-label targets must be [{x.shape[0]}, C], got {tuple(y.shape)}")
        n_classes = y.shape[1]
    else:
        y = as_tensor(targets, "targets").to(device=device, dtype=torch.long)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"multi-class targets must be [{x.shape[0]}], got {tuple(y.shape)}")
        n_classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if standardize:
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features: leave unscaled
    else:
        mean, std = (
            torch.zeros(x.shape[1], dtype=x.dtype, device=device),
            torch.ones(x.shape[1], dtype=x.dtype, device=device),
        )
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, device=device, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, device=device, requires_grad=True)

    def data_loss() -> Tensor:
        logits = xs @ w + b
        if multilabel:
            return F.binary_cross_entropy_with_logits(logits, y)
        return F.cross_entropy(logits, y)

    with torch.enable_grad():
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(
                [w, b],
                lr=lr or 1.0,
                max_iter=max_iter,
                history_size=10,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-7,
                tolerance_change=1e-10,
            )

            def closure() -> Tensor:
                opt.zero_grad()
                loss = data_loss() + 0.5 * weight_decay * (w * w).sum()
                loss.backward()
                return loss

            opt.step(closure)
        elif optimizer == "adamw":
            opt = torch.optim.AdamW(
                [{"params": [w], "weight_decay": weight_decay}, {"params": [b], "weight_decay": 0.0}], lr=lr or 1e-2
            )
            for _ in range(max_iter):
                opt.zero_grad()
                data_loss().backward()
                opt.step()
        else:
            raise ValueError(f"optimizer must be 'lbfgs' or 'adamw', got {optimizer!r}")
    if not bool(torch.isfinite(w).all()):
        raise FloatingPointError(f"linear probe diverged (weight_decay={weight_decay}, optimizer={optimizer})")
    return LinearProbeModel(w.detach(), b.detach(), mean, std, multilabel, float(weight_decay))


def probe_subset_indices(targets: Tensor, fraction: float, seed: int, *, multilabel: bool) -> Tensor:
    """Deterministic, stratified-ish training subset.

    Multi-class: ``max(1, round(fraction * n_c))`` rows of every class c (exactly stratified, every class kept).
    Multi-label: the first ``max(1, round(fraction * N))`` rows of a seeded permutation, plus, for every class that
    has positives (negatives) in the full set but none in the subset, its first positive (negative) in permutation
    order, so every learnable class keeps at least one of each. Subsets of one seed are nested across fractions.

    Args:
        targets: Multi-class [N] indices or multi-label [N, C] binary.
        fraction: In (0, 1]; 1 returns all rows.
        seed: Seed of the CPU generator.
        multilabel: How to read ``targets``.

    Returns:
        Sorted long tensor of row indices.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = as_tensor(targets, "targets").cpu()
    n = y.shape[0]
    if fraction >= 1:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    if not multilabel:
        y = y.long()
        chosen = []
        y_perm = y[perm]
        for c in torch.unique(y).tolist():
            rows = perm[y_perm == c]  # this class's rows in permutation order
            chosen.append(rows[: max(1, round(fraction * rows.numel()))])
        return torch.sort(torch.cat(chosen)).values
    y = y.bool()
    k = max(1, round(fraction * n))
    picked = torch.zeros(n, dtype=torch.bool)
    picked[perm[:k]] = True
    y_perm = y[perm]
    for want in (True, False):
        present_full = (y == want).any(dim=0)
        present_sub = (y[picked] == want).any(dim=0)
        for c in torch.nonzero(present_full & ~present_sub).flatten().tolist():
            first = int(torch.nonzero(y_perm[:, c] == want)[0])
            picked[perm[first]] = True
    return torch.nonzero(picked).flatten()


# ----------------------------------------------------------------------------------------------- label alignment


def _is_frame(y: Any) -> bool:
    return isinstance(y, pd.DataFrame)


def _align_frames(frames: list[pd.DataFrame], splits: list[str], class_names: Sequence[str] | None) -> list[str]:
    names = [str(c) for c in frames[0].columns] if class_names is None else [str(c) for c in class_names]
    for split, df in zip(splits, frames):
        cols = [str(c) for c in df.columns]
        if len(set(cols)) != len(cols):
            raise ValueError(f"{split} labels have duplicate column names: {cols}")
        if set(cols) != set(names):
            missing = sorted(set(names) - set(cols))
            extra = sorted(set(cols) - set(names))
            raise ValueError(f"{split} label columns do not match the class names: missing {missing}, extra {extra}")
    return names


def _prepare_labels(
    ys: list[Any], multilabel: bool | None, class_names: Sequence[str] | None
) -> tuple[list[Tensor], list[str], bool]:
    """Align train/val/test labels by name -> tensors ([N, C] float or [N] long), class names, multilabel flag."""
    splits = ["train", "val", "test"]
    if any(_is_frame(y) for y in ys):
        if not all(_is_frame(y) for y in ys):
            raise ValueError("give train, val and test labels all as DataFrames (aligned by column name) or none")
        names = _align_frames(ys, splits, class_names)
        mats = [torch.tensor(y[list(names)].to_numpy(dtype=np.float64)) for y in ys]
        if multilabel is False:
            out = []
            for split, m in zip(splits, mats):
                if not bool(((m == 0) | (m == 1)).all()) or not bool((m.sum(dim=1) == 1).all()):
                    raise ValueError(f"{split}: multi-class DataFrame labels must be one-hot (exactly one 1 per row)")
                out.append(m.argmax(dim=1))
            return out, names, False
        return mats, names, True

    tensors = []
    for y in ys:
        arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else (y.cpu().numpy() if isinstance(y, Tensor) else y))
        tensors.append(arr)
    ndims = {a.ndim for a in tensors}
    if len(ndims) != 1 or ndims.pop() not in (1, 2):
        raise ValueError(
            f"labels must all be 1-D (multi-class) or 2-D (multi-label), got shapes {[a.shape for a in tensors]}"
        )
    if tensors[0].ndim == 2:
        if multilabel is False:
            raise ValueError("2-D labels are multi-label; pass 1-D class indices for multi-class probing")
        widths = {a.shape[1] for a in tensors}
        if len(widths) != 1:
            raise ValueError(
                f"label matrices have different widths {[a.shape[1] for a in tensors]}; "
                "pass DataFrames to align classes by name"
            )
        c = widths.pop()
        names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
        if len(names) != c:
            raise ValueError(f"{len(names)} class names for {c} label columns")
        return [torch.as_tensor(a.astype(np.float64)) for a in tensors], names, True
    if multilabel is True:
        raise ValueError("1-D labels are multi-class; pass [N, C] labels (or DataFrames) for multi-label probing")
    if any(a.dtype.kind in "OUS" for a in tensors):
        # Class names as values: map through the training classes (or the given order); unknown names raise.
        names = sorted({str(v) for v in tensors[0]}) if class_names is None else [str(n) for n in class_names]
        index = {n: i for i, n in enumerate(names)}
        out = []
        for split, a in zip(splits, tensors):
            unknown = sorted({str(v) for v in a} - set(index))
            if unknown:
                raise ValueError(f"{split} labels contain classes not in the training classes: {unknown[:10]}")
            out.append(torch.tensor([index[str(v)] for v in a], dtype=torch.long))
        return out, names, False
    if any(a.dtype.kind == "f" and not np.all(a == np.round(a)) for a in tensors):
        raise ValueError("1-D multi-class labels must be integer class indices")
    ints = [torch.as_tensor(a.astype(np.int64)) for a in tensors]
    c = max(int(t.max()) for t in ints) + 1 if class_names is None else len(class_names)
    if any(int(t.min()) < 0 or int(t.max()) >= c for t in ints):
        raise ValueError(f"class indices must lie in [0, {c})")
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    return ints, names, False


# ------------------------------------------------------------------------------------------------------ protocol


def _evaluate(model: LinearProbeModel, x: Tensor, y: Tensor, metric: str, n_classes: int) -> float:
    scores = model.predict_scores(x)
    if metric == "accuracy":
        from torchmetrics.functional.classification import multiclass_accuracy  # lazy: slow import

        return float(multiclass_accuracy(scores, y.to(scores.device), num_classes=n_classes, average="micro"))
    targets = y if model.multilabel else F.one_hot(y, n_classes)
    try:
        return multilabel_auroc(scores.cpu(), targets.cpu(), min_positives=0, warn=False)["macro"]
    except ValueError:
        return float("nan")


def linear_probe(
    train_feats: Tensor,
    train_y: Any,
    val_feats: Tensor,
    val_y: Any,
    test_feats: Tensor,
    test_y: Any,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    multilabel: bool | None = None,
    class_names: Sequence[str] | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    metric: str | None = None,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    standardize: bool = True,
) -> pd.DataFrame:
    """Linear probe at several training fractions; weight decay selected on validation, test evaluated once.

    Args:
        train_feats: Frozen features [Ntr, D].
        train_y: Labels: a DataFrame with one named 0/1 column per class (multi-label; aligned by *name* across
            splits, column order may differ, differing names raise), an [N, C] array/tensor (multi-label, same
            column order required), or 1-D class indices / class-name strings (multi-class).
        val_feats: [Nva, D].
        val_y: Validation labels, same kind as ``train_y``.
        test_feats: [Nte, D].
        test_y: Test labels, same kind as ``train_y``.
        fractions: Training fractions in (0, 1].
        seeds: Subset seeds (one run per seed and fraction).
        multilabel: None = infer from the labels (DataFrame/2-D -> multi-label); False with a one-hot DataFrame
            -> multi-class.
        class_names: Class order (default: training columns / sorted training class names / indices).
        weight_decays: Grid searched on the validation set.
        metric: "macro_auroc" (multi-label default; sigmoid scores) or, for multi-class, "accuracy" (default) or
            "macro_auroc" (one-vs-rest on softmax probabilities).
        optimizer: "lbfgs" or "adamw" (see :func:`fit_linear_probe`).
        max_iter: Optimiser iterations per fit.
        standardize: Standardise features with training-subset statistics.

    Returns:
        DataFrame with one row per fraction: ``fraction, metric, mean, std, n_seeds, n_train, summary``
        ("mean ± std"), ``values`` (per-seed test metrics), ``weight_decays`` (selected per seed), ``val_mean``.
        ``df.attrs["runs"]`` holds one dict per (fraction, seed) with the validation score of every decay.
        Fits are cached per distinct subset (e.g. fraction 1.0 is fitted once and shared by all seeds).
    """
    xs = [
        check_embeddings(f, f"{s} features")
        for f, s in zip((train_feats, val_feats, test_feats), ("train", "val", "test"))
    ]
    dims = {x.shape[1] for x in xs}
    if len(dims) != 1:
        raise ValueError(f"feature dims differ across splits: {[x.shape[1] for x in xs]}")
    (ytr, yva, yte), names, is_ml = _prepare_labels([train_y, val_y, test_y], multilabel, class_names)
    for x, y, split in zip(xs, (ytr, yva, yte), ("train", "val", "test")):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{split}: {x.shape[0]} feature rows but {y.shape[0]} label rows")
    metric = metric or ("macro_auroc" if is_ml else "accuracy")
    if metric not in ("macro_auroc", "accuracy") or (is_ml and metric != "macro_auroc"):
        raise ValueError(f"unsupported metric {metric!r} for {'multi-label' if is_ml else 'multi-class'} labels")
    if not weight_decays:
        raise ValueError("weight_decays must not be empty")
    n_classes = len(names)
    if is_ml:
        for split, y in (("val", yva), ("test", yte)):
            pos = y.sum(dim=0)
            undefined = [names[c] for c in range(n_classes) if pos[c] == 0 or pos[c] == y.shape[0]]
            if undefined:
                warnings.warn(
                    f"{split} set has no positives or no negatives for {undefined}; these classes are "
                    f"excluded from the {split} macro AUROC",
                    stacklevel=2,
                )
    # Ties in validation score go to the larger decay: iterate from strongest to weakest, keep strict improvements.
    grid = sorted({float(w) for w in weight_decays}, reverse=True)

    cache: dict[bytes, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    for fraction in fractions:
        for seed in seeds:
            idx = probe_subset_indices(ytr, fraction, seed, multilabel=is_ml)
            key = idx.numpy().tobytes()
            if key not in cache:
                best_model, best_val, val_scores = None, -math.inf, {}
                for wd in grid:
                    model = fit_linear_probe(
                        xs[0][idx.to(xs[0].device)],
                        ytr[idx],
                        multilabel=is_ml,
                        num_classes=n_classes,
                        weight_decay=wd,
                        optimizer=optimizer,
                        max_iter=max_iter,
                        standardize=standardize,
                    )
                    score = _evaluate(model, xs[1], yva, metric, n_classes)
                    val_scores[wd] = score
                    if score > best_val:  # NaN never wins
                        best_model, best_val = model, score
                if best_model is None:
                    raise ValueError(
                        f"validation {metric} is undefined for every weight decay (fraction={fraction}); "
                        "does the validation set contain both positives and negatives?"
                    )
                test_score = _evaluate(best_model, xs[2], yte, metric, n_classes)  # the only look at the test set
                cache[key] = {
                    "weight_decay": best_model.weight_decay,
                    "val_metric": best_val,
                    "test_metric": test_score,
                    "val_scores": val_scores,
                }
            runs.append({"fraction": float(fraction), "seed": int(seed), "n_train": int(idx.numel()), **cache[key]})

    rows = []
    for fraction in fractions:
        sel = [r for r in runs if r["fraction"] == float(fraction)]
        vals = np.array([r["test_metric"] for r in sel], dtype=np.float64)
        mean, std = float(np.mean(vals)), float(np.std(vals))
        rows.append(
            {
                "fraction": float(fraction),
                "metric": metric,
                "mean": mean,
                "std": std,
                "n_seeds": len(sel),
                "n_train": float(np.mean([r["n_train"] for r in sel])),
                "summary": f"{mean:.4f} ± {std:.4f}",
                "values": vals.tolist(),
                "weight_decays": [r["weight_decay"] for r in sel],
                "val_mean": float(np.mean([r["val_metric"] for r in sel])),
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["runs"] = runs
    df.attrs["class_names"] = names
    return df
