from __future__ import annotations

import pandas as pd
import pytest
import torch

import vlp_core.eval.probe as probe_mod
from vlp_core.eval import fit_linear_probe, linear_probe, probe_subset_indices

CLASSES = ["atelectasis", "edema", "effusion"]
GRID = (0.0, 1e-2, 10.0)
FAST = {"max_iter": 40}  # keeps the suite fast; the fits here converge well within it


def _multilabel(n: int, seed: int, flip: bool = False, d: int = 8) -> tuple[torch.Tensor, pd.DataFrame]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, 3, generator=torch.Generator().manual_seed(123))  # same rule in every split
    y = ((x @ w + 0.5 * torch.randn(n, 3, generator=gen)) > 0.3).long()
    if flip:
        y = 1 - y
    return x, pd.DataFrame(y.numpy(), columns=CLASSES)


def _multiclass(n: int, seed: int, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centers = torch.randn(4, d, generator=torch.Generator().manual_seed(7)) * 2
    return centers[y] + torch.randn(n, d, generator=gen), y


def test_multilabel_probe_result_table() -> None:
    tr, va, te = _multilabel(400, 0), _multilabel(150, 1), _multilabel(150, 2)
    df = linear_probe(*tr, *va, *te, fractions=(0.05, 0.5, 1.0), seeds=(0, 1), weight_decays=GRID, **FAST)
    assert list(df["fraction"]) == [0.05, 0.5, 1.0]
    assert set(df.columns) >= {"fraction", "metric", "mean", "std", "n_seeds", "summary"}
    assert (df["metric"] == "macro_auroc").all() and (df["n_seeds"] == 2).all()
    assert df.loc[2, "std"] == 0.0  # 100 %: same subset for every seed, deterministic full-batch fit
    assert df.loc[2, "mean"] > 0.85 and (df["std"] >= 0).all()
    assert df.attrs["class_names"] == CLASSES and len(df.attrs["runs"]) == 6


def test_selection_uses_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    tr, va = _multilabel(300, 0), _multilabel(120, 1)
    honest_test, adversarial_test = _multilabel(120, 2), _multilabel(120, 2, flip=True)
    kw = {"fractions": (0.1, 1.0), "seeds": (0, 1), "weight_decays": GRID, **FAST}

    calls: list[tuple[str, float]] = []
    real_evaluate = probe_mod._evaluate

    def spy(model, x, y, metric, n_classes):  # noqa: ANN001
        calls.append(("test" if x.data_ptr() == test_x.data_ptr() else "val", model.weight_decay))
        return real_evaluate(model, x, y, metric, n_classes)

    monkeypatch.setattr(probe_mod, "_evaluate", spy)
    test_x = honest_test[0]
    honest = linear_probe(*tr, *va, *honest_test, **kw)
    test_x = adversarial_test[0]
    calls.clear()
    adversarial = linear_probe(*tr, *va, test_x, adversarial_test[1], **kw)
    # Adversarial test labels (flipped) change nothing about selection: same decays, same validation scores.
    sel = [(r["fraction"], r["seed"], r["weight_decay"], r["val_metric"]) for r in honest.attrs["runs"]]
    assert sel == [(r["fraction"], r["seed"], r["weight_decay"], r["val_metric"]) for r in adversarial.attrs["runs"]]
    assert (adversarial["mean"] < 0.2).all() and (honest["mean"] > 0.8).all()
    # Per distinct subset: every decay scored on val, then the test set exactly once, with the selected model.
    n_distinct = 3  # two 10 % subsets (seeds 0, 1) + the shared 100 % subset
    assert [tag for tag, _ in calls] == (["val"] * len(GRID) + ["test"]) * n_distinct
    selected = [r["weight_decay"] for r in adversarial.attrs["runs"]]
    assert [wd for tag, wd in calls if tag == "test"] == [selected[0], selected[1], selected[2]]


def test_labels_aligned_by_column_name() -> None:
    tr, va, te = _multilabel(300, 0), _multilabel(100, 1), _multilabel(100, 2)
    kw = {"fractions": (0.2, 1.0), "seeds": (0, 1), "weight_decays": GRID, **FAST}
    base = linear_probe(*tr, *va, *te, **kw)
    shuffled_cols = ["effusion", "atelectasis", "edema"]
    shuffled = linear_probe(tr[0], tr[1], va[0], va[1][shuffled_cols], te[0], te[1][shuffled_cols[::-1]], **kw)
    pd.testing.assert_frame_equal(base, shuffled)
    # Positional arrays with shuffled columns would silently mis-align: a different (worse) result.
    positional = linear_probe(
        tr[0], tr[1].to_numpy(), va[0], va[1][shuffled_cols].to_numpy(), te[0], te[1][shuffled_cols].to_numpy(), **kw
    )
    assert not positional["mean"].equals(base["mean"])
    renamed = te[1].rename(columns={"edema": "oedema"})
    with pytest.raises(ValueError, match=r"missing \['edema'\], extra \['oedema'\]"):
        linear_probe(*tr, *va, te[0], renamed, **kw)
    with pytest.raises(ValueError, match="all as DataFrames"):
        linear_probe(*tr, *va, te[0], te[1].to_numpy(), **kw)


def test_subsets_deterministic_stratified_and_nested() -> None:
    _, y = _multiclass(1000, 0)
    for frac in (0.01, 0.1, 1.0):
        a = probe_subset_indices(y, frac, seed=3, multilabel=False)
        assert torch.equal(a, probe_subset_indices(y, frac, seed=3, multilabel=False))
        counts = torch.bincount(y[a], minlength=4)
        assert bool((counts == max(1, round(frac * 250))).all())  # exactly stratified
    assert not torch.equal(
        probe_subset_indices(y, 0.1, 0, multilabel=False), probe_subset_indices(y, 0.1, 1, multilabel=False)
    )
    small = set(probe_subset_indices(y, 0.01, 5, multilabel=False).tolist())
    assert small <= set(probe_subset_indices(y, 0.1, 5, multilabel=False).tolist())
    assert torch.equal(probe_subset_indices(y, 1.0, 5, multilabel=False), torch.arange(1000))

    ym = torch.zeros(500, 3, dtype=torch.long)
    ym[:, 0] = 1
    ym[::2, 1] = 1
    ym[7, 2] = 1  # one rare positive
    ym[9, 0] = 0  # one rare negative
    idx = probe_subset_indices(ym, 0.01, seed=0, multilabel=True)
    assert torch.equal(idx, probe_subset_indices(ym, 0.01, seed=0, multilabel=True))
    assert 7 in idx.tolist() and 9 in idx.tolist()  # every class keeps a positive and a negative
    assert 5 <= idx.numel() <= 8


def test_multiclass_probe_with_string_labels() -> None:
    (xtr, ytr), (xva, yva), (xte, yte) = _multiclass(200, 0), _multiclass(80, 1), _multiclass(80, 2)
    names = ["normal", "mi", "sttc", "hyp"]
    to_names = lambda y: pd.Series([names[i] for i in y.tolist()])  # noqa: E731
    by_index = linear_probe(
        xtr, ytr, xva, yva, xte, yte, fractions=(0.1, 1.0), seeds=(0, 1), weight_decays=GRID, **FAST
    )
    by_name = linear_probe(
        xtr,
        to_names(ytr),
        xva,
        to_names(yva),
        xte,
        to_names(yte),
        fractions=(0.1, 1.0),
        seeds=(0, 1),
        weight_decays=GRID,
        class_names=names,
        **FAST,
    )
    assert (by_index["metric"] == "accuracy").all() and by_index.loc[1, "mean"] > 0.9
    pd.testing.assert_series_equal(by_index["mean"], by_name["mean"])
    with pytest.raises(ValueError, match="not in the training classes"):
        linear_probe(
            xtr,
            to_names(ytr),
            xva,
            to_names(yva),
            xte,
            pd.Series(["normal", "bogus"] * 40),
            fractions=(1.0,),
            seeds=(0,),
            class_names=names,
            **FAST,
        )


def test_fit_is_logistic_regression() -> None:
    x, y = _multiclass(200, 3)
    strong = fit_linear_probe(x, y, multilabel=False, weight_decay=100.0)
    weak = fit_linear_probe(x, y, multilabel=False, weight_decay=0.0)
    assert strong.weight.norm() < weak.weight.norm()
    probs = weak.predict_scores(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(200, dtype=probs.dtype))
    xm, ym = _multilabel(200, 4)
    ml = fit_linear_probe(xm, torch.tensor(ym.to_numpy()), multilabel=True, optimizer="adamw", max_iter=50)
    scores = ml.predict_scores(xm)
    assert not torch.allclose(scores.sum(1), torch.ones(200, dtype=scores.dtype))  # sigmoid, not softmax


def test_nan_features_raise() -> None:
    tr, va, te = _multilabel(50, 0), _multilabel(20, 1), _multilabel(20, 2)
    bad = va[0].clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="val features contains NaN"):
        linear_probe(*tr, bad, va[1], *te, fractions=(1.0,), seeds=(0,))
