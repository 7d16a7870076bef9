"""Collate for dict samples: nested dicts, ragged tensors (padded + mask), several texts per sample (owner index).

``collate_batch`` is the default collate of every vlp data module. Rules, per key:

- ``None`` samples (bad records skipped under ``skip_bad``) are dropped first;
- nested dicts are collated recursively (``{"ecg": {"signal": ..., "rpeaks": ...}}``);
- tensors of equal shape are stacked; tensors that differ only in their first dimension (clips ``[T, C, H, W]`` of
  different ``T``, beats ``[Nb, W]``, token ids ``[L]``) are right-padded with zeros to ``[B, T_max, ...]`` and get a
  ``"<key>_mask"`` entry ``[B, T_max]`` bool (True = real); any other shape difference is an error;
- a list of strings per sample (several captions, aspects, narrations) becomes one flat ``list[str]`` of all ``M``
  texts plus ``"<key>_owner"``, a long tensor ``[M]`` with the index of the sample each text belongs to, and
  ``"<key>_ids"``, stable text ids ``[M]`` (:func:`vlp_core.text.text_ids`: equal texts, equal ids, on every rank);
- strings become a list; bools/ints/floats a tensor; anything else a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from vlp_core.text import text_ids

__all__ = ["collate_batch", "pad_stack"]


def pad_stack(values: Sequence[Tensor], key: str = "tensor") -> tuple[Tensor, Tensor | None]:
    """Stack tensors, zero-padding the first dimension when it differs.

    Args:
        values: ``B`` tensors ``[T_i, ...]`` with equal trailing dimensions.
        key: name used in error messages.

    Returns:
        ``(stacked [B, T_max, ...], mask [B, T_max] or None when no padding was needed)``.
    """
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) == 1:
        return torch.stack(list(values)), None
    if len({v.ndim for v in values}) != 1 or values[0].ndim == 0:
        raise ValueError(f"cannot collate {key!r}: shapes {sorted(shapes)} have different ranks")
    trailing = {tuple(v.shape[1:]) for v in values}
    if len(trailing) != 1:
        raise ValueError(
            f"cannot collate {key!r}: shapes {sorted(shapes)} differ beyond the first dimension "
            "(only the first dimension may be ragged; resize or crop explicitly in a transform)"
        )
    length = max(v.shape[0] for v in values)
    out = values[0].new_zeros((len(values), length, *values[0].shape[1:]))
    mask = torch.zeros(len(values), length, dtype=torch.bool)
    for i, v in enumerate(values):
        out[i, : v.shape[0]] = v
        mask[i, : v.shape[0]] = True
    return out, mask


def _collate(values: list[Any], key: str, out: dict[str, Any]) -> None:
    first = values[0]
    if isinstance(first, Mapping):
        out[key] = collate_batch(values, _where=key)
    elif isinstance(first, Tensor):
        stacked, mask = pad_stack(values, key)
        out[key] = stacked
        if mask is not None:
            out[f"{key}_mask"] = mask
    elif isinstance(first, str):
        out[key] = list(values)
    elif isinstance(first, (list, tuple)) and all(
        isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v) for v in values
    ):
        out[key] = [t for v in values for t in v]
        out[f"{key}_owner"] = torch.repeat_interleave(
            torch.arange(len(values)), torch.tensor([len(v) for v in values], dtype=torch.long)
        )
        out[f"{key}_ids"] = text_ids(out[key])
    elif isinstance(first, (bool, int, float)):
        out[key] = torch.tensor(values)
    else:
        out[key] = list(values)


def collate_batch(samples: Sequence[Mapping[str, Any] | None], _where: str = "") -> dict[str, Any]:
    """Collate dict samples into a batch (see the module docstring for the rules).

    Raises:
        ValueError: every sample was ``None`` (all skipped), or tensor shapes that cannot be padded.
        KeyError: samples do not share the same keys (naming the first offending sample).
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        raise ValueError("cannot collate an empty batch (every sample was skipped as bad input, or none was given)")
    keys = list(kept[0])
    for i, s in enumerate(kept):
        if set(s) != set(keys):
            where = f" in {_where!r}" if _where else ""
            raise KeyError(f"sample {i}{where} has keys {sorted(s)}, expected {sorted(keys)}")
    out: dict[str, Any] = {}
    for key in keys:
        _collate([s[key] for s in kept], f"{key}", out)
    return out
