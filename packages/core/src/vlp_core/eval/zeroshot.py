"""Zero-shot classification: prompt-ensemble classifiers and positive/negative prompt pairs.

The classifier builder is equivalent to open_clip's ``build_zero_shot_classifier``: every template is filled
with the class name, the texts are encoded and L2-normalised, averaged over templates and re-normalised. Classes
are processed in batches (``num_classes_per_batch``) to bound memory. Unlike open_clip the result is [C, D]
(one row per class) rather than [D, C].

Scores are cosine similarities by default; any :class:`~vlp_core.similarity.Similarity` can be passed instead
(prompt embeddings are then averaged after the similarity's per-row ``prepare``, e.g. without normalisation). open_clip multiplies by a fixed 100, which leaves rankings (and so
accuracy and AUROC) unchanged but gives probabilities that are not the model's own; pass the model's learned
multiplicative scale (``model.logit_scale.exp()``) as ``logit_scale`` to get its calibrated logits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp_core.eval._checks import as_tensor, check_embeddings
from vlp_core.similarity import Similarity, resolve_similarity

__all__ = [
    "Template",
    "zero_shot_classifier",
    "zero_shot_scores",
    "zero_shot_accuracy",
    "topk_accuracy",
    "prompt_pair_classifier",
    "multilabel_zero_shot_scores",
    "multilabel_zero_shot",
]

#: A template is a ``str.format`` string with one ``{}`` slot for the class name, or a callable name -> prompt.
Template = str | Callable[[str], str]


def _batched(items: Sequence[Any], n: int | None) -> list[Sequence[Any]]:
    if not n:
        return [items]
    it = iter(items)
    return list(iter(lambda: list(islice(it, n)), []))


def _fill(template: Template, name: str) -> str:
    return template(name) if callable(template) else template.format(name)


def _encode_normalised(
    encode_text: Callable[[list[str]], Tensor], texts: list[str], what: str, similarity: Similarity | None = None
) -> Tensor:
    emb = encode_text(texts)
    emb = check_embeddings(emb, f"text embeddings for {what}")
    if emb.shape[0] != len(texts):
        raise ValueError(f"encode_text returned {emb.shape[0]} embeddings for {len(texts)} texts ({what})")
    return F.normalize(emb.float(), dim=-1) if similarity is None else similarity.prepare(emb.float())


def _mean_prompt_embeddings(
    encode_text: Callable[[list[str]], Tensor],
    prompts_per_class: Sequence[Sequence[str]],
    class_names: Sequence[str],
    num_classes_per_batch: int | None,
    similarity: Similarity | None = None,
) -> Tensor:
    """Encode each class's prompts, average the normalised (prepared) embeddings, re-normalise -> [C, D]."""
    out = []
    for batch in _batched(list(range(len(prompts_per_class))), num_classes_per_batch):
        texts: list[str] = []
        counts: list[int] = []
        for c in batch:
            prompts = list(prompts_per_class[c])
            if not prompts:
                raise ValueError(f"class {class_names[c]!r} has no prompts")
            texts.extend(prompts)
            counts.append(len(prompts))
        emb = _encode_normalised(encode_text, texts, f"classes {[class_names[c] for c in batch][:3]}...", similarity)
        # Classes may have different prompt counts (pos/neg pairs): average per contiguous segment.
        seg = torch.repeat_interleave(torch.arange(len(batch), device=emb.device), torch.tensor(counts).to(emb.device))
        summed = torch.zeros(len(batch), emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(0, seg, emb)
        mean = summed / torch.tensor(counts, dtype=emb.dtype, device=emb.device)[:, None]
        out.append(F.normalize(mean, dim=-1) if similarity is None else similarity.prepare(mean))
    return torch.cat(out, dim=0)


@torch.no_grad()
def zero_shot_classifier(
    encode_text: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[Template],
    *,
    num_classes_per_batch: int | None = 10,
    similarity: Similarity | None = None,
) -> Tensor:
    """Build zero-shot class embeddings from class names x templates (open_clip-equivalent).

    Args:
        encode_text: Maps a list of T strings to embeddings [T, D] (normalised or not; they are normalised here).
        classnames: C class names.
        templates: K templates (``"a photo of {}."`` strings or callables).
        num_classes_per_batch: Classes encoded per ``encode_text`` call (None = all at once).
        similarity: average prompt embeddings after this similarity's ``prepare`` (default: L2 normalisation).

    Returns:
        Class embeddings [C, D], L2-normalised (row c = normalised mean over templates of class c).
    """
    if len(classnames) == 0 or len(templates) == 0:
        raise ValueError("zero_shot_classifier needs at least one class name and one template")
    prompts = [[_fill(t, name) for t in templates] for name in classnames]
    return _mean_prompt_embeddings(encode_text, prompts, list(classnames), num_classes_per_batch, similarity)


def _scale(logit_scale: float | Tensor | None) -> float:
    if logit_scale is None:
        return 1.0
    value = float(as_tensor(logit_scale, "logit_scale").reshape(-1)[0])
    if not value > 0 or value == float("inf"):
        raise ValueError(f"logit_scale must be a positive multiplier (e.g. model.logit_scale.exp()), got {value}")
    return value


@torch.no_grad()
def zero_shot_scores(
    features: Tensor,
    classifier: Tensor,
    logit_scale: float | Tensor | None = None,
    similarity: Similarity | None = None,
) -> Tensor:
    """Zero-shot logits: similarity between features and class embeddings (cosine by default), optionally scaled.

    Args:
        features: Embeddings [N, D] (normalised here for cosine).
        classifier: Class embeddings [C, D] from :func:`zero_shot_classifier`.
        logit_scale: Multiplicative scale (the model's ``logit_scale.exp()``); None = 1 (plain similarity).
        similarity: pairwise similarity (:mod:`vlp_core.similarity`); default cosine.

    Returns:
        Logits [N, C] (softmax of them gives class probabilities when the learned scale is used).
    """
    feats = check_embeddings(features, "features")
    cls = check_embeddings(classifier, "classifier")
    if feats.shape[1] != cls.shape[1]:
        raise ValueError(f"features have dim {feats.shape[1]} but the classifier has dim {cls.shape[1]}")
    cls = cls.to(device=feats.device, dtype=feats.dtype)
    return _scale(logit_scale) * resolve_similarity(similarity)(feats, cls)


def topk_accuracy(scores: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (micro, i.e. fraction of samples) via torchmetrics.

    Args:
        scores: Logits or probabilities [N, C].
        targets: Class indices [N] (long).
        ks: Values of k; k larger than C is clipped to C.

    Returns:
        ``{"top1": float, "top5": float, ...}`` in [0, 1].
    """
    scores = check_embeddings(scores, "scores")
    targets = as_tensor(targets, "targets", dtype=torch.long).to(scores.device)
    if targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must have shape [{scores.shape[0]}], got {tuple(targets.shape)}")
    n_classes = scores.shape[1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(
            f"targets must be class indices in [0, {n_classes}), got range [{int(targets.min())}, {int(targets.max())}]"
        )
    # Imported lazily: importing torchmetrics pulls in torchvision and costs seconds at `import vlp_core.eval`.
    from torchmetrics.functional.classification import multiclass_accuracy

    out = {}
    for k in ks:
        kk = min(int(k), n_classes)
        acc = multiclass_accuracy(scores, targets, num_classes=n_classes, top_k=kk, average="micro")
        out[f"top{k}"] = float(acc)
    return out


def zero_shot_accuracy(
    features: Tensor,
    targets: Tensor,
    classifier: Tensor,
    ks: Sequence[int] = (1, 5),
    logit_scale: float | Tensor | None = None,
) -> dict[str, float]:
    """Top-k zero-shot accuracy of features [N, D] with class indices targets [N] against classifier [C, D]."""
    return topk_accuracy(zero_shot_scores(features, classifier, logit_scale), targets, ks)


@torch.no_grad()
def prompt_pair_classifier(
    encode_text: Callable[[list[str]], Tensor],
    pos_prompts: Mapping[str, Sequence[str]],
    neg_prompts: Mapping[str, Sequence[str]],
    *,
    num_classes_per_batch: int | None = 10,
) -> tuple[Tensor, Tensor, list[str]]:
    """Embed positive and negative prompts per class (each set averaged and re-normalised like templates).

    Args:
        encode_text: Maps T strings to embeddings [T, D].
        pos_prompts: ``{class name: ["cardiomegaly", "enlarged heart", ...]}``; its key order defines class order.
        neg_prompts: ``{class name: ["no cardiomegaly", "normal heart size", ...]}``, same keys.
        num_classes_per_batch: Classes encoded per call.

    Returns:
        ``(pos [C, D], neg [C, D], class_names)``, embeddings L2-normalised.
    """
    names = list(pos_prompts)
    if not names:
        raise ValueError("pos_prompts is empty")
    if set(names) != set(neg_prompts):
        only_pos = sorted(set(names) - set(neg_prompts))
        only_neg = sorted(set(neg_prompts) - set(names))
        raise ValueError(f"pos/neg prompt classes differ: only positive {only_pos}, only negative {only_neg}")
    for group in (pos_prompts, neg_prompts):
        for name in names:
            if isinstance(group[name], str):
                raise TypeError(f"prompts for class {name!r} must be a list of strings, not a single string")
    pos = _mean_prompt_embeddings(encode_text, [pos_prompts[n] for n in names], names, num_classes_per_batch)
    neg = _mean_prompt_embeddings(encode_text, [neg_prompts[n] for n in names], names, num_classes_per_batch)
    return pos, neg, names


@torch.no_grad()
def multilabel_zero_shot_scores(
    features: Tensor,
    pos: Tensor,
    neg: Tensor,
    *,
    mode: str = "softmax",
    logit_scale: float | Tensor | None = None,
    similarity: Similarity | None = None,
) -> Tensor:
    """Per-class scores from positive/negative prompt embeddings.

    ``mode="softmax"`` returns ``softmax([s·cos(x, pos_c), s·cos(x, neg_c)])[0] = sigmoid(s·(cos_pos − cos_neg))``
    (a probability; only calibrated with the model's learned scale ``s``). ``mode="diff"`` returns
    ``cos_pos − cos_neg``. Both are strictly increasing functions of the same difference, so per-class AUROC is
    identical; choose "softmax" for probabilities, "diff" for raw margins.

    Args:
        features: Embeddings [N, D].
        pos: Positive-prompt embeddings [C, D].
        neg: Negative-prompt embeddings [C, D].
        mode: "softmax" or "diff".
        logit_scale: Multiplicative scale ``s`` (None = 1); ignored by "diff".
        similarity: pairwise similarity (default cosine).

    Returns:
        Scores [N, C].
    """
    if mode not in ("softmax", "diff"):
        raise ValueError(f"mode must be 'softmax' or 'diff', got {mode!r}")
    s_pos = zero_shot_scores(features, pos, similarity=similarity)
    s_neg = zero_shot_scores(features, neg, similarity=similarity)
    if s_pos.shape != s_neg.shape:
        raise ValueError(f"pos {tuple(pos.shape)} and neg {tuple(neg.shape)} prompt embeddings differ in shape")
    diff = s_pos - s_neg
    if mode == "diff":
        return diff
    return torch.sigmoid(_scale(logit_scale) * diff)


@torch.no_grad()
def multilabel_zero_shot(
    features: Tensor,
    encode_text: Callable[[list[str]], Tensor],
    pos_prompts: Mapping[str, Sequence[str]],
    neg_prompts: Mapping[str, Sequence[str]],
    *,
    mode: str = "softmax",
    logit_scale: float | Tensor | None = None,
    num_classes_per_batch: int | None = 10,
) -> Tensor:
    """Multi-label zero-shot scores with positive/negative prompt pairs (evaluate with ``multilabel_auroc``).

    Args:
        features: Embeddings [N, D].
        encode_text: Maps T strings to embeddings [T, D].
        pos_prompts: ``{class: [positive prompts]}``; key order = column order of the result.
        neg_prompts: ``{class: [negative prompts]}`` with the same keys.
        mode: "softmax" (default, sigmoid of the scaled pos−neg difference) or "diff"; see
            :func:`multilabel_zero_shot_scores`.
        logit_scale: The model's multiplicative scale (None = 1).
        num_classes_per_batch: Classes encoded per ``encode_text`` call.

    Returns:
        Scores [N, C]; column c is class ``list(pos_prompts)[c]``.
    """
    feats = check_embeddings(features, "features")
    pos, neg, _ = prompt_pair_classifier(
        encode_text, pos_prompts, neg_prompts, num_classes_per_batch=num_classes_per_batch
    )
    return multilabel_zero_shot_scores(feats, pos, neg, mode=mode, logit_scale=logit_scale)
