"""Full fine-tuning in the bench: it learns, it selects the step on validation only, and it leaves the model alone."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from vlp_core.towers.base import TowerOutput
from vlp_medical.bench import full_finetune


class _Flat(nn.Module):
    """Tiny image tower: flatten + linear (location-aware, so quadrant labels are learnable)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> TowerOutput:
        return TowerOutput(self.lin(x.flatten(1)), None)


def _data(n: int, seed: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.stack([x[:, 0, :4, :4].mean((1, 2)) > 0, x[:, 0, 4:, 4:].mean((1, 2)) > 0], 1).float()
    return x, (1 - y if flip else y)


def _model() -> SimpleNamespace:
    torch.manual_seed(0)
    return SimpleNamespace(towers={"image": _Flat()}, probabilistic=False)


def test_finetune_learns_and_keeps_the_model_unchanged() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.towers["image"].state_dict().items()}
    data = {"train": _data(256, 0), "val": _data(128, 1), "test": _data(128, 2)}
    runs = full_finetune(model, data, ["a", "b"], fractions=[1.0], seeds=[0, 1], steps=120, lr=1e-2, eval_every=20)
    assert len(runs) == 2 and {r["seed"] for r in runs} == {0, 1}
    for r in runs:
        curve = r["val_curve"]
        assert sorted(curve) == [0, 20, 40, 60, 80, 100, 120]
        assert r["best_step"] == max(curve, key=lambda s: (curve[s], -s)) and r["val_metric"] == max(curve.values())
        assert r["test_metric"] > 0.9 and curve[0] < 0.8  # learned the quadrant labels; started near chance
    for k, v in model.towers["image"].state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_finetune_selects_on_validation_not_test() -> None:
    # Validation labels are flipped: training makes validation worse, so the selected step is the untrained one
    # (step 0) although the test split (not flipped) would favour the last step. A selection peeking at test fails.
    model = _model()
    data = {"train": _data(256, 0), "val": _data(128, 1, flip=True), "test": _data(128, 2)}
    (run,) = full_finetune(model, data, ["a", "b"], fractions=[1.0], seeds=[0], steps=100, lr=1e-2, eval_every=25)
    assert run["val_curve"][100] < run["val_curve"][0]
    assert run["best_step"] == 0 and run["test_metric"] < 0.8


def test_finetune_fraction_subsets_and_unknown_labels() -> None:
    model = _model()
    x, y = _data(200, 0)
    y[::7, 1] = float("nan")  # unknown labels are left out of the loss
    data = {"train": (x, y), "val": _data(64, 1), "test": _data(64, 2)}
    runs = full_finetune(model, data, ["a", "b"], fractions=[0.1, 1.0], seeds=[0], steps=10, eval_every=5)
    assert [r["n_train"] for r in runs] == [20, 200]
    assert all(torch.isfinite(torch.tensor(r["test_metric"])) for r in runs)


def test_top1_findings_wrong_compares_label_vectors_of_the_retrieved_report() -> None:
    from types import SimpleNamespace

    from vlp_core.similarity import CosineSimilarity
    from vlp_medical.bench import top1_findings_wrong

    # Texts embed to fixed unit vectors; image i is closest to the text listed in `nearest`.
    vocab = {"r0": [1.0, 0, 0], "r1": [0, 1.0, 0], "r2": [0, 0, 1.0]}
    model = SimpleNamespace(similarity=CosineSimilarity(),
                            encode_text=lambda ts: torch.tensor([vocab[t] for t in ts]))  # fmt: skip
    texts = ["r0", "r1", "r2", "r0"]  # image 3 carries the same report as image 0
    nan = float("nan")
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, nan], [1.0, 0.0]])
    nearest = ["r1", "r1", "r0", "r2"]  # 0: other report, same findings; 2 and 3: other findings
    img = torch.tensor([vocab[t] for t in nearest]) + 0.01
    wrong = top1_findings_wrong(model, img, labels, texts)
    assert wrong.tolist() == [0.0, 0.0, 1.0, 1.0]
    labels_nan = torch.tensor([[0.0, nan], [1.0, 0.0], [0.0, nan], [1.0, 0.0]])
    assert top1_findings_wrong(model, img, labels_nan, texts)[2] == 0.0  # NaN matches NaN
