"""Learning-rate schedule and optimiser parameter groups (open_clip conventions)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

__all__ = ["WarmupCosine", "param_groups"]


class WarmupCosine:
    """Linear warm-up from 0 to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total`` steps.

    A picklable callable (not a lambda), so ``LambdaLR`` state round-trips through checkpoints.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0) -> None:
        if total < 1 or warmup < 0:
            raise ValueError(f"need total >= 1 and warmup >= 0, got total={total}, warmup={warmup}")
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


_NO_DECAY_WORDS = ("bias", "norm", "bn", "ln", "logit_scale", "logit_bias", "temperature", "pos_embed", "cls_token")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    leaf = name.lower().split(".")
    return param.ndim < 2 or any(word in part for part in leaf for word in _NO_DECAY_WORDS)


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    lr_multipliers: dict[str, float] | None = None,
) -> list[dict]:
    """AdamW groups: no decay on norms, biases, 1-D tensors and temperatures; per-prefix LR multipliers.

    Args:
        named: ``model.named_parameters()``; frozen parameters are skipped.
        lr: base learning rate.
        weight_decay: decay for the remaining (matrix) parameters.
        lr_multipliers: ``{"towers.text": 0.1}`` scales the LR of parameters whose name starts with the key
            (longest match wins).
    """
    lr_multipliers = lr_multipliers or {}
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        match = max((k for k in lr_multipliers if name.startswith(k)), key=len, default=None)
        mult = lr_multipliers[match] if match is not None else 1.0
        nd = _no_decay(name, p)
        key = (mult, nd)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr * mult, "weight_decay": 0.0 if nd else weight_decay}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())
