"""Data utilities: ragged/nested collate, manifests, patient-level splits, skip-bad policy, sample-data lookup, error hierarchy."""

from __future__ import annotations

from vlp_core.data.collate import collate_batch, pad_stack
from vlp_core.data.errors import (
    BadInputError,
    CorruptRecordError,
    InvalidValueError,
    ManifestError,
    MissingColumnError,
    UnsupportedFormatError,
)
from vlp_core.data.manifest import MANIFEST_SUFFIXES, check_manifest, read_manifest
from vlp_core.data.sample_data import sample_data_dir, sample_data_root
from vlp_core.data.skip import SkipGuard, SkipPolicy, redact
from vlp_core.data.splits import DEFAULT_SPLIT_NAMES, patient_split, patient_split_labels, split_of

__all__ = [
    "collate_batch",
    "pad_stack",
    "BadInputError",
    "CorruptRecordError",
    "InvalidValueError",
    "ManifestError",
    "MissingColumnError",
    "UnsupportedFormatError",
    "MANIFEST_SUFFIXES",
    "check_manifest",
    "read_manifest",
    "sample_data_dir",
    "sample_data_root",
    "SkipGuard",
    "SkipPolicy",
    "redact",
    "DEFAULT_SPLIT_NAMES",
    "patient_split",
    "patient_split_labels",
    "split_of",
]
