"""Encode a whole dataset with one tower of a model, and find a model's learned contrastive temperature."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlp_core.data.collate import collate_batch

__all__ = ["encode_dataset", "find_logit_scale"]


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: _to(v, device) for k, v in x.items()}
    return x


@torch.no_grad()
def encode_dataset(
    model: nn.Module,
    dataset: Dataset,
    field: str,
    *,
    tower: str | None = None,
    label_key: str | None = "labels",
    collate_fn: Callable[[Sequence[Any]], dict[str, Any]] | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Embeddings of ``dataset[i][field]`` for every item, in dataset order, with the model in eval mode.

    Args:
        model: a :class:`~vlp_core.training.Pretrainer` (the tower is looked up through its field routing) or a
            tower itself.
        dataset: map-style dataset of dict samples.
        field: the sample key to encode (``"image"``, ``"ecg"``, ``"report"``).
        tower: tower name when it differs from what the model routes ``field`` to.
        label_key: also stack this key of the batches (``None`` = no labels).
        collate_fn: batch collate (default :func:`vlp_core.data.collate_batch`).
        batch_size / num_workers: loader settings.
        progress: show a progress bar.

    Returns:
        ``(embeddings [N, D] float32 on CPU, not normalised; labels [N, ...] or None)``.
    """
    towers = getattr(model, "towers", None)
    if towers is not None:
        name = tower or getattr(model, "inputs", {}).get(field, field)
        if name not in towers:
            raise KeyError(f"the model has no tower for field {field!r} (towers: {sorted(towers)})")
        encoder = towers[name]
    else:
        encoder = model
    was_training = model.training
    model.eval()
    try:
        device = next(encoder.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn or collate_batch)  # fmt: skip
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for batch in tqdm(loader, desc=f"encode {field}", disable=not progress):
            if field not in batch:
                raise KeyError(f"dataset items have no field {field!r}; they have {sorted(batch)}")
            feats.append(encoder(_to(batch[field], device)).embedding.float().cpu())
            if label_key is not None and label_key in batch:
                labels.append(torch.as_tensor(batch[label_key]))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the dataset is empty: nothing to encode")
    return torch.cat(feats), (torch.cat(labels) if labels else None)


def find_logit_scale(model: nn.Module, term: str | None = None, default: float = 100.0) -> float:
    """The learned multiplicative logit scale ``exp(θ)`` of a model's contrastive loss term.

    Args:
        model: a Pretrainer (its ``losses`` are searched in order) or a loss module.
        term: name of the loss term to read (default: the first term whose loss has a ``logit_scale``).
        default: returned when no term has a learned scale (open_clip's fixed 100).
    """
    terms = getattr(model, "losses", None)
    candidates = (
        [(getattr(t, "name", ""), getattr(t, "loss", t)) for t in terms] if terms is not None else [("", model)]
    )
    for name, loss in candidates:
        if term is not None and name != term:
            continue
        scale = getattr(loss, "logit_scale", None)
        if isinstance(scale, Tensor):
            return float(scale.detach().exp().reshape(-1)[0])  # core losses store log(scale)
    if term is not None:
        raise KeyError(f"no loss term {term!r} with a logit_scale; terms: {[n for n, _ in candidates]}")
    return default
