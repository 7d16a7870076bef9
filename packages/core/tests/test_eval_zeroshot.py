from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from vlp_core.eval import (
    multilabel_auroc,
    multilabel_zero_shot,
    multilabel_zero_shot_scores,
    prompt_pair_classifier,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_scores,
)

D = 12


def _text_vec(text: str) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return torch.randn(D, generator=torch.Generator().manual_seed(seed)) * 3  # deliberately not normalised


class FakeEncoder:
    """Deterministic text encoder; records call sizes to check class batching."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(len(texts))
        return torch.stack([_text_vec(t) for t in texts])


CLASSES = ["cardiomegaly", "edema", "effusion", "pneumonia", "atelectasis", "nodule", "mass"]
TEMPLATES = ["a chest x-ray showing {}.", "{} is present.", lambda c: f"findings consistent with {c}"]


def _reference_classifier(classes, templates) -> torch.Tensor:
    rows = []
    for c in classes:
        embs = torch.stack([F.normalize(_text_vec(t(c) if callable(t) else t.format(c)), dim=0) for t in templates])
        rows.append(F.normalize(embs.mean(0), dim=0))
    return torch.stack(rows)


@pytest.mark.parametrize("per_batch", [1, 3, 10, None])
def test_classifier_matches_bruteforce_and_batches(per_batch: int | None) -> None:
    enc = FakeEncoder()
    clf = zero_shot_classifier(enc, CLASSES, TEMPLATES, num_classes_per_batch=per_batch)
    assert clf.shape == (len(CLASSES), D)
    torch.testing.assert_close(clf, _reference_classifier(CLASSES, TEMPLATES))
    torch.testing.assert_close(clf.norm(dim=1), torch.ones(len(CLASSES)))
    expected_calls = len(CLASSES) if per_batch is None else per_batch
    assert max(enc.calls) == min(expected_calls, len(CLASSES)) * len(TEMPLATES)


def test_classifier_equals_open_clip_builder() -> None:
    zsc = pytest.importorskip("open_clip.zero_shot_classifier")
    vocab: dict[str, int] = {}

    def tokenizer(texts):
        return torch.tensor([vocab.setdefault(t, len(vocab)) for t in texts])

    class Model:
        def encode_text(self, tokens, normalize=False):
            inv = {v: k for k, v in vocab.items()}
            emb = torch.stack([_text_vec(inv[int(i)]) for i in tokens])
            return F.normalize(emb, dim=-1) if normalize else emb

    str_templates = ["a chest x-ray showing {}.", "{} is present.", "there is {}"]
    theirs = zsc.build_zero_shot_classifier(Model(), tokenizer, CLASSES, str_templates, num_classes_per_batch=3)
    ours = zero_shot_classifier(FakeEncoder(), CLASSES, str_templates, num_classes_per_batch=4)
    torch.testing.assert_close(ours, theirs.T)


def test_scores_accuracy_against_bruteforce() -> None:
    gen = torch.Generator().manual_seed(0)
    clf = zero_shot_classifier(FakeEncoder(), CLASSES, TEMPLATES)
    targets = torch.randint(len(CLASSES), (40,), generator=gen)
    feats = clf[targets] * 2 + 0.9 * torch.randn(40, D, generator=gen)
    scores = zero_shot_scores(feats, clf)
    torch.testing.assert_close(scores, F.normalize(feats, dim=-1) @ clf.T)
    torch.testing.assert_close(zero_shot_scores(feats, clf, logit_scale=torch.tensor([50.0])), 50 * scores)
    acc = zero_shot_accuracy(feats, targets, clf, ks=(1, 3))
    top3 = scores.topk(3, dim=1).indices
    assert acc["top1"] == pytest.approx(float((scores.argmax(1) == targets).float().mean()))
    assert acc["top3"] == pytest.approx(float((top3 == targets[:, None]).any(1).float().mean()))
    assert topk_accuracy(scores, targets, ks=(100,))["top100"] == 1.0  # k clipped to C


def test_multilabel_pos_neg_pairs() -> None:
    pos = {c: [f"{c}", f"signs of {c}"] for c in CLASSES[:4]}
    neg = {c: [f"no {c}"] for c in reversed(CLASSES[:4])}  # key order differs: class order follows pos_prompts
    p, n, names = prompt_pair_classifier(FakeEncoder(), pos, neg, num_classes_per_batch=3)
    assert names == CLASSES[:4]
    ref_p = torch.stack(
        [F.normalize(torch.stack([F.normalize(_text_vec(t), dim=0) for t in pos[c]]).mean(0), dim=0) for c in names]
    )
    ref_n = torch.stack([F.normalize(_text_vec(f"no {c}"), dim=0) for c in names])
    torch.testing.assert_close(p, ref_p)
    torch.testing.assert_close(n, ref_n)

    gen = torch.Generator().manual_seed(1)
    targets = torch.randint(2, (60, 4), generator=gen)
    feats = torch.randn(60, D, generator=gen) + 1.5 * (targets.float() @ ref_p + (1 - targets.float()) @ ref_n)
    cos_p = F.normalize(feats, dim=-1) @ ref_p.T
    cos_n = F.normalize(feats, dim=-1) @ ref_n.T
    soft = multilabel_zero_shot(feats, FakeEncoder(), pos, neg, logit_scale=20.0)
    expected = torch.softmax(torch.stack([20 * cos_p, 20 * cos_n], dim=-1), dim=-1)[..., 0]
    torch.testing.assert_close(soft, expected)
    diff = multilabel_zero_shot_scores(feats, p, n, mode="diff")
    torch.testing.assert_close(diff, cos_p - cos_n)
    # softmax and diff are monotone in the same margin: identical per-class AUROC.
    a = multilabel_auroc(soft, targets, names, min_positives=0)
    b = multilabel_auroc(diff, targets, names, min_positives=0)
    assert a["per_class"] == pytest.approx(b["per_class"])
    assert a["macro"] > 0.7


def test_errors() -> None:
    enc = FakeEncoder()
    with pytest.raises(ValueError, match="only positive"):
        prompt_pair_classifier(enc, {"a": ["a"], "b": ["b"]}, {"a": ["no a"]})
    with pytest.raises(ValueError, match="logit_scale"):
        zero_shot_scores(torch.randn(3, D), torch.randn(2, D), logit_scale=-1.0)
    feats = torch.randn(3, D)
    feats[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        zero_shot_scores(feats, torch.randn(2, D))
    with pytest.raises(ValueError, match="NaN"):
        zero_shot_classifier(lambda texts: torch.full((len(texts), D), float("nan")), ["a"], ["{}"])
    with pytest.raises(ValueError, match="dim"):
        zero_shot_scores(torch.randn(3, D), torch.randn(2, D + 1))


def test_zero_shot_scores_take_a_similarity() -> None:
    from vlp_core.similarity import CosineSimilarity, Similarity

    class NegSqDist(Similarity):
        def forward(self, a, b):
            return -torch.cdist(a, b).square()

    g = torch.Generator().manual_seed(0)
    feats, cls = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    torch.testing.assert_close(
        zero_shot_scores(feats, cls, similarity=CosineSimilarity()), zero_shot_scores(feats, cls)
    )
    torch.testing.assert_close(
        zero_shot_scores(feats, cls, 2.0, similarity=NegSqDist()), -2.0 * torch.cdist(feats, cls) ** 2
    )
