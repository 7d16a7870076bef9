"""Lightning pretraining: towers + weighted loss terms, optimiser conventions, data module base."""

from __future__ import annotations

from vlp_core.training.base import CONFIG_NAME, WEIGHTS_NAME, VlpModule
from vlp_core.training.datamodule import PairedDataModule, ResumableDataLoader, collate_paired
from vlp_core.training.module import Pretrainer
from vlp_core.training.precision import PRECISIONS, cpu_has_native_bf16, resolve_precision
from vlp_core.training.samplers import EpochIndexSampler, EpochSeededSampler, MultiSourceSampler
from vlp_core.training.schedule import WarmupCosine, param_groups
from vlp_core.training.terms import LossTerm

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "EpochIndexSampler",
    "EpochSeededSampler",
    "MultiSourceSampler",
    "LossTerm",
    "PRECISIONS",
    "PairedDataModule",
    "Pretrainer",
    "ResumableDataLoader",
    "VlpModule",
    "WarmupCosine",
    "collate_paired",
    "cpu_has_native_bf16",
    "param_groups",
    "resolve_precision",
]
