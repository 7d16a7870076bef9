from __future__ import annotations

import random

import pandas as pd
import pytest

from vlp_core.data import BadInputError, patient_split, patient_split_labels, split_of


def _records(n_patients: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = [(f"P{p:05d}", f"rec{p}_{k}") for p in range(n_patients) for k in range(rng.randint(1, 4))]
    return pd.DataFrame(rows, columns=["patient_id", "record"])


def test_patient_level_disjoint_and_complete() -> None:
    df = _records()
    splits = patient_split(df["patient_id"], (0.7, 0.15, 0.15), seed=1)
    assert set(splits) == {"train", "val", "test"}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    assert set().union(*splits.values()) == set(df["patient_id"])
    df["split"] = patient_split_labels(df["patient_id"], (0.7, 0.15, 0.15), seed=1)
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()  # every record of a patient together
    for name, ids in splits.items():
        assert set(df.loc[df["split"] == name, "patient_id"]) == ids


def test_deterministic_and_stable_under_shuffling_and_growth() -> None:
    df = _records()
    base = patient_split(df["patient_id"], seed=3)
    assert base == patient_split(df["patient_id"], seed=3)
    shuffled = df.sample(frac=1.0, random_state=0)
    assert base == patient_split(shuffled["patient_id"], seed=3)
    grown = pd.concat([df, _records(600, seed=9).assign(patient_id=lambda d: "N" + d["patient_id"])])
    bigger = patient_split(grown["patient_id"], seed=3)
    for name, ids in base.items():
        assert ids <= bigger[name]  # no existing patient moves when new ones arrive
    assert patient_split(df["patient_id"], seed=4) != base


def test_fractions_respected_in_expectation() -> None:
    ids = range(20000)
    sizes = {k: len(v) for k, v in patient_split(ids, {"a": 0.5, "b": 0.3, "c": 0.2}, seed=0).items()}
    assert sizes["a"] == pytest.approx(10000, rel=0.03) and sizes["c"] == pytest.approx(4000, rel=0.05)
    assert split_of(12345, {"a": 0.5, "b": 0.3, "c": 0.2}) in {"a", "b", "c"}
    assert patient_split(ids, (1.0, 0.0, 0.0))["val"] == set()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(["a"], (0.8, 0.1))
    with pytest.raises(ValueError, match="non-negative"):
        patient_split(["a"], (1.2, -0.2, 0.0))
    with pytest.raises(BadInputError, match="patient id is missing"):
        patient_split(["a", None])
