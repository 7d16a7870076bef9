"""Evaluation: zero-shot (prompt ensembles, pos/neg prompt pairs), chunked retrieval, AUROC + bootstrap, probes."""

from __future__ import annotations

from vlp_core.eval.classification import (
    binary_auroc,
    bootstrap_ci,
    bootstrap_macro_auroc,
    macro_auroc,
    multilabel_auroc,
    per_class_auroc,
)
from vlp_core.eval.encode import encode_dataset, find_logit_scale
from vlp_core.eval.probe import (
    DEFAULT_WEIGHT_DECAYS,
    LinearProbeModel,
    fit_linear_probe,
    linear_probe,
    probe_subset_indices,
)
from vlp_core.eval.retrieval import bidirectional_retrieval, metrics_from_ranks, retrieval_metrics, retrieval_ranks
from vlp_core.eval.zeroshot import (
    multilabel_zero_shot,
    multilabel_zero_shot_scores,
    prompt_pair_classifier,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_scores,
)

__all__ = [
    "encode_dataset",
    "find_logit_scale",
    "binary_auroc",
    "bootstrap_ci",
    "bootstrap_macro_auroc",
    "macro_auroc",
    "multilabel_auroc",
    "per_class_auroc",
    "DEFAULT_WEIGHT_DECAYS",
    "LinearProbeModel",
    "fit_linear_probe",
    "linear_probe",
    "probe_subset_indices",
    "bidirectional_retrieval",
    "metrics_from_ranks",
    "retrieval_metrics",
    "retrieval_ranks",
    "multilabel_zero_shot",
    "multilabel_zero_shot_scores",
    "prompt_pair_classifier",
    "topk_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
    "zero_shot_scores",
]
