"""MAKE: knowledge table, decomposition, diagnosis-guided weights, per-sub-caption local pooling, the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlp_core.losses import ClipLoss
from vlp_medical.make import AspectDecomposer, MakeLoss, diagnosis_weights, load_knowledge, local_pooled_logits


def test_knowledge_tables_ship_and_validate(tmp_path) -> None:
    cxr = load_knowledge("cxr")
    assert {"cardiomegaly", "effusion", "pneumothorax", "consolidation", "nodule", "edema"} <= set(cxr)
    assert all(e["visual_concepts"] and e["location"] and e["morphology"] for e in cxr.values())
    assert len(load_knowledge("derm")) >= 5
    with pytest.raises(ValueError, match="'bad'.*ontology"):
        load_knowledge({"bad": {"visual_concepts": []}})
    with pytest.raises(FileNotFoundError):
        load_knowledge(tmp_path / "missing.json")


def test_decomposer_fills_side_and_orders_texts() -> None:
    dec = AspectDecomposer("cxr", max_aspects=8)
    report = "FINDINGS: Small left pleural effusion. Heart size is normal. IMPRESSION: Left pleural effusion."
    assert dec.diagnoses_from_labels({"Pleural Effusion": 1.0, "Edema": 0.0, "Cardiomegaly": float("nan")}) == [
        "effusion"
    ]
    out = dec(report, ["effusion"])
    assert out["ontology"].startswith("pleural effusion")
    assert "left lower hemithorax" in out["aspects"] and "Heart size is normal" in out["aspects"]
    assert len(out["aspects"]) <= 8 and len(set(out["aspects"])) == len(out["aspects"])
    flat = dec.texts(report, ["effusion"])
    assert flat[0][1] == 1 and all(k == 2 for _, k in flat[1:])
    assert dec("FINDINGS: Normal.", [])["ontology"] is None
    custom = AspectDecomposer("cxr", decompose=lambda r, d: ["from an llm"])
    assert custom(report, [])["aspects"] == ["from an llm"]


def test_diagnosis_weights_are_max_normalised_softmax_in_similarity_order() -> None:
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(9, 8, generator=g), dim=-1)
    #        reports   | s0: onto, 3 aspects | s1: 2 aspects (no ontology) | s0 again? no: sample-major
    owner = torch.tensor([0, 1, 0, 0, 0, 0, 1, 1, 1])
    kind = torch.tensor([0, 0, 1, 2, 2, 2, 2, 2, 2])
    w = diagnosis_weights(t, owner, kind, temperature=0.5)
    assert torch.equal(w[:3], torch.ones(3)) and torch.equal(w[6:], torch.ones(3))  # no ontology for sample 1
    sims = t[3:6] @ t[2]
    ref = torch.softmax(sims / 0.5, 0)
    torch.testing.assert_close(w[3:6], ref / ref.max())
    assert w[3:6].max() == 1.0 and torch.equal(torch.argsort(w[3:6]), torch.argsort(sims))
    torch.testing.assert_close((w[3:6] / w[3:6].sum()), ref)  # normalised per sample = the softmax
    assert not w.requires_grad


def test_local_pooling_is_per_subcaption_and_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    p = F.normalize(torch.randn(2, 5, 4, generator=g), dim=-1)
    t = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    got = local_pooled_logits(p, t, threshold=0.0)
    for b in range(2):
        for c in range(3):
            s = p[b] @ t[c]
            a = s * (s >= 0)
            a = a / a.norm().clamp_min(1e-6)
            v = F.normalize((a[:, None] * p[b]).sum(0), dim=0, eps=1e-6)
            torch.testing.assert_close(got[b, c], v @ t[c])
    assert (local_pooled_logits(p, t, threshold=2.0) == 0).all()  # nothing passes: zero vector, no NaN


def _inputs(seed: int, b: int = 3, d: int = 6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    owner = torch.tensor([0, 0, 0, 1, 2, 2])
    kind = torch.tensor([1, 2, 2, 2, 1, 2])
    return (torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, 4, d, generator=g, dtype=dtype),
            torch.randn(b, d, generator=g, dtype=dtype), torch.randn(6, d, generator=g, dtype=dtype), owner, kind)  # fmt: skip


def test_make_loss_without_aspects_equals_clip() -> None:
    img, _, rep, *_ = _inputs(2)
    loss = MakeLoss(lambda_s=0.0)
    out = loss.compute(img, None, rep, rep[:0], torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    torch.testing.assert_close(out["loss"], ClipLoss()(img, rep)["loss"])


def test_make_loss_is_invariant_to_sample_order() -> None:
    img, pat, rep, asp, owner, kind = _inputs(3)
    loss = MakeLoss(threshold=0.0)
    ref = loss.compute(img, pat, rep, asp, owner, kind)
    perm = torch.tensor([2, 0, 1])
    inv = torch.argsort(perm)
    # Re-order samples and re-lay the flat text list sample-major for the new order.
    order = torch.cat([torch.nonzero(owner == int(p)).flatten() for p in perm])
    out = loss.compute(img[perm], pat[perm], rep[perm], asp[order], inv[owner[order]], kind[order])
    torch.testing.assert_close(out["loss"], ref["loss"])
    assert "slra" in ref and ref["slra"] > 0


def test_make_loss_gradcheck() -> None:
    img, pat, rep, asp, owner, kind = _inputs(4, dtype=torch.float64)
    # Every patch attends (threshold -1) and fixed weights: the diagnosis weights are detached by design, so a
    # finite-difference check would see their dependence on the texts that the analytic gradient ignores.
    loss = MakeLoss(threshold=-1.0, diagnosis_weighting=False).double()
    args = [x.requires_grad_() for x in (img, pat, rep, asp)]
    assert torch.autograd.gradcheck(lambda *a: loss.compute(*a, owner, kind)["loss"], tuple(args), eps=1e-6, atol=1e-5)
