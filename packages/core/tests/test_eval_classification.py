from __future__ import annotations

import warnings

import pytest
import torch

from vlp_core.eval import (
    binary_auroc,
    bootstrap_ci,
    bootstrap_macro_auroc,
    macro_auroc,
    multilabel_auroc,
    per_class_auroc,
)


def _data(n: int = 200, c: int = 5, seed: int = 0, ties: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=gen) < 0.3).long()
    scores = torch.randn(n, c, generator=gen) + targets
    if ties:
        scores = (scores * 2).round() / 2  # many exact ties
    return scores, targets


@pytest.mark.parametrize("ties", [False, True])
def test_per_class_matches_torchmetrics(ties: bool) -> None:
    from torchmetrics.classification import BinaryAUROC, MultilabelAUROC

    scores, targets = _data(ties=ties)
    ours = per_class_auroc(scores, targets)
    ref = MultilabelAUROC(num_labels=5, average="none", thresholds=None)(torch.sigmoid(scores), targets)
    torch.testing.assert_close(ours.float(), ref.float(), atol=1e-6, rtol=0)
    ref_macro = MultilabelAUROC(num_labels=5, average="macro", thresholds=None)(torch.sigmoid(scores), targets)
    assert multilabel_auroc(scores, targets)["macro"] == pytest.approx(float(ref_macro), abs=1e-6)
    ref_bin = BinaryAUROC(thresholds=None)(torch.sigmoid(scores[:, 0]), targets[:, 0])
    assert binary_auroc(scores[:, 0], targets[:, 0]) == pytest.approx(float(ref_bin), abs=1e-6)


def test_ties_count_half() -> None:
    assert binary_auroc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5
    # 2 positives x 2 negatives: one win, two ties, one loss -> (1 + 2 * 0.5) / 4
    assert binary_auroc(torch.tensor([0.9, 0.5, 0.5, 0.5]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="undefined"):
        binary_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_excluded_and_flagged_classes() -> None:
    scores, targets = _data(n=100, c=4, ties=False)
    targets[:, 1] = 0  # no positives -> excluded, not NaN macro
    targets[:, 2] = 0
    targets[:3, 2] = 1  # 3 positives -> flagged (min_positives=10) but kept
    with pytest.warns(UserWarning, match="excluded from the macro"):
        res = multilabel_auroc(scores, targets, ["a", "b", "c", "d"], min_positives=10)
    assert res["excluded"] == ["b"] and res["flagged"] == ["c"]
    assert res["n_classes_in_macro"] == 3 and res["n_positives"]["c"] == 3
    expected = (res["per_class"]["a"] + res["per_class"]["c"] + res["per_class"]["d"]) / 3
    assert res["macro"] == pytest.approx(expected)
    assert res["per_class"]["b"] != res["per_class"]["b"]  # NaN reported per class, never in the macro
    with pytest.raises(ValueError, match="no class"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        multilabel_auroc(scores, torch.zeros_like(targets))


def test_input_validation() -> None:
    scores, targets = _data(n=20, c=2)
    scores[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        multilabel_auroc(scores, targets)
    with pytest.raises(ValueError, match="binary"):
        multilabel_auroc(torch.randn(4, 2), torch.full((4, 2), 2))
    with pytest.raises(ValueError, match="same shape"):
        multilabel_auroc(torch.randn(4, 2), torch.ones(4, 3))


def test_bootstrap_ci_contains_point_and_is_seeded() -> None:
    scores, targets = _data(n=150, c=3, seed=2)
    a = bootstrap_macro_auroc(scores, targets, n=200, seed=7)
    b = bootstrap_macro_auroc(scores, targets, n=200, seed=7)
    c = bootstrap_macro_auroc(scores, targets, n=200, seed=8)
    assert a == b
    assert (a["low"], a["high"]) != (c["low"], c["high"])
    assert a["low"] <= a["point"] <= a["high"] and a["low"] < a["high"]
    assert a["point"] == pytest.approx(macro_auroc(scores, targets))
    assert a["n_boot"] == 200
    # The generic path draws the same resamples, so it agrees exactly with the vectorised one.
    g = bootstrap_ci(macro_auroc, scores, targets, n=200, seed=7)
    assert g["low"] == pytest.approx(a["low"]) and g["high"] == pytest.approx(a["high"])
    # Narrower interval at lower confidence.
    narrow = bootstrap_macro_auroc(scores, targets, n=200, seed=7, alpha=0.5)
    assert narrow["high"] - narrow["low"] < a["high"] - a["low"]


def test_bootstrap_drops_undefined_replicates_with_warning() -> None:
    scores = torch.linspace(0, 1, 30)
    targets = torch.zeros(30, dtype=torch.long)
    targets[-1] = 1  # one positive: many resamples have none

    def metric(s: torch.Tensor, t: torch.Tensor) -> float:
        return macro_auroc(s, t)

    with pytest.warns(UserWarning, match="replicates gave an undefined metric"):
        res = bootstrap_ci(metric, scores, targets, n=100, seed=0)
    assert 0 < res["n_boot"] < 100


def test_bootstrap_drops_replicates_where_auroc_is_undefined() -> None:
    """With one positive in 12 rows, ~1/3 of resamples have none: those replicates are dropped, not fatal."""
    from vlp_core.eval import binary_auroc, bootstrap_ci

    scores = torch.linspace(0, 1, 12)
    targets = torch.zeros(12)
    targets[-1] = 1
    with pytest.warns(UserWarning):
        ci = bootstrap_ci(binary_auroc, scores, targets, n=200, seed=0)
    assert ci["point"] == 1.0 and ci["low"] == 1.0 and 0 < ci["n_boot"] < 200
