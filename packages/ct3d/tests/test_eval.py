"""Retrieval metrics against brute force, zero-shot tables, the CT CLIP text tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlp_ct3d.eval import (
    class_directions,
    direction_alignment,
    jaccard_map_at_k,
    mean_average_precision,
    prompt_directions,
    report_text_zeroshot,
    zeroshot_alignment,
    zeroshot_table,
)


def _brute_map(sim: np.ndarray, rel: np.ndarray, exclude_self: bool) -> float:
    aps = []
    for i in range(len(sim)):
        idx = [j for j in range(sim.shape[1]) if not (exclude_self and j == i)]
        order = sorted(idx, key=lambda j: (-sim[i, j], j))
        hits, precs = 0, []
        for r, j in enumerate(order, 1):
            if rel[i, j]:
                hits += 1
                precs.append(hits / r)
        if precs:
            aps.append(np.mean(precs))
    return float(np.mean(aps))


@pytest.mark.parametrize("exclude_self", [False, True])
def test_map_matches_brute_force(exclude_self: bool) -> None:
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(12, 12, generator=g)
    rel = torch.rand(12, 12, generator=g) < 0.3
    assert mean_average_precision(sim, rel, exclude_self) == pytest.approx(
        _brute_map(sim.numpy(), rel.numpy(), exclude_self)
    )


def test_jaccard_map_excludes_query_and_resets_per_k() -> None:
    # Four volumes: 0 and 1 identical labels and embeddings; 2 and 3 others.
    feats = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [-1.0, 0]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 0]])
    out = jaccard_map_at_k(feats, labels, ks=(1, 3))
    # Query 0 -> nearest other is 1 (J=1); query 1 -> 0 (J=1); query 2 -> 1 or 0 (J=0); 3 has no positive label.
    assert out["MAP@1"] == pytest.approx(2 / 3)
    # K=3 over the 3 others: query 0 -> {1: 1, 2: 0, 3: 0} = 1/3, same for 1, query 2 -> 0.
    assert out["MAP@3"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)


def test_zeroshot_table_youden_and_macro() -> None:
    y = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 1]]).float()
    s = torch.tensor([[0.9, 0.2], [0.8, 0.7], [0.1, 0.3], [0.3, 0.6], [0.7, 0.9], [0.2, 0.8]])
    res = zeroshot_table(s, y, ["a", "b"], n_boot=50)
    assert res["per_class"]["a"]["auroc"] == 1.0 and res["per_class"]["a"]["sensitivity"] == 1.0
    assert res["macro_auroc"] == pytest.approx((1.0 + res["per_class"]["b"]["auroc"]) / 2)
    assert res["ci_low"] <= res["macro_auroc"] <= res["ci_high"]


def test_text_tower_warns_on_truncation_and_pads_tokens() -> None:
    from vlp_ct3d.models import CTTextTower

    tower = CTTextTower(embed_dim=8, max_length=12)
    with pytest.warns(UserWarning, match="truncated to the text tower's limit of 12"):
        tower(["Pleural effusion is present in the right lower hemithorax with adjacent compressive atelectasis."])
    tokens, mask = tower.token_sequence(["No effusion.", "Heart size is normal here."], length=16)
    assert tokens.shape == (2, 16, 8) and mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]
    assert torch.all(tokens[~mask] == 0)


def test_volume_text_set_augmentation_is_deterministic_and_controls_shuffle() -> None:
    from vlp_ct3d.train import VolumeTextSet

    x = torch.rand(6, 1, 8, 8, 8)
    texts = [f"Findings: Finding {i} here. No effusion. Impression: Item {i}." for i in range(6)]
    y = torch.eye(6)[:, :2]
    a = VolumeTextSet(x, texts, y, augment=True, sentence_prob=0.5, seed=3)
    b = VolumeTextSet(x, texts, y, augment=True, sentence_prob=0.5, seed=3)
    for i in range(6):
        sa, sb = a[i], b[i]
        torch.testing.assert_close(sa["image"], sb["image"])
        assert sa["text"] == sb["text"] and sa["text"] in [texts[i], *a.sentences[i]]
        assert sa["image"].shape == (1, 8, 8, 8)
    assert {a[i]["text"] for i in range(6)} != set(texts)  # some sentences were sampled
    assert a.sentences[0] == ["Finding 0 here.", "No effusion.", "Item 0."]
    shuffled = VolumeTextSet(x, texts, y, shuffle_pairs=True, seed=3)
    assert sorted(shuffled.texts) == sorted(texts) and shuffled.texts != texts
    torch.testing.assert_close(shuffled[0]["image"], x[0])  # volumes and labels stay, only reports move


def test_build_ct_clip_text_options_reach_the_text_tower() -> None:
    from vlp_ct3d.models import build_ct_clip

    plain = build_ct_clip(volume_tower="conv", embed_dim=8, widths=(4, 8), seed=0).towers["text"]
    tuned = build_ct_clip(volume_tower="conv", embed_dim=8, widths=(4, 8), seed=0, text_proj="mlp",
                          text_unfreeze_last_n=1, text_noise=1.5).towers["text"]  # fmt: skip
    assert not any(p.requires_grad for p in plain.encoder.parameters())
    assert (plain.proj.input_noise, tuned.proj.input_noise) == (0.0, 1.5)
    n_lin = sum(isinstance(m, torch.nn.Linear) for m in plain.proj.modules())
    assert sum(isinstance(m, torch.nn.Linear) for m in tuned.proj.modules()) == n_lin + 1  # Linear-GELU-Linear
    trainable = {n.split(".")[2] for n, p in tuned.encoder.named_parameters() if p.requires_grad and ".layer." in n}
    n_blocks = tuned.encoder.config.num_hidden_layers
    assert trainable == {str(n_blocks - 1)}  # the last MiniLM block only


def test_sentence_term_treats_shared_sentences_as_positives_and_trains() -> None:
    from vlp_core.data import collate_batch
    from vlp_ct3d.models import build_ct_clip
    from vlp_ct3d.train import VolumeTextSet, fit_clip

    x = torch.rand(4, 1, 8, 8, 8)
    texts = ["Findings: Heart size is normal. No effusion. Impression: Normal.",
             "Findings: The heart is enlarged. No effusion. Impression: Cardiomegaly.",
             "Findings: Heart size is normal. Left pleural effusion. Impression: Effusion.",
             "Findings: The heart is enlarged. Left pleural effusion. Impression: Both."]  # fmt: skip
    ds = VolumeTextSet(x, texts, torch.zeros(4, 2), sentences=True)
    batch = collate_batch([ds[i] for i in range(4)])
    assert batch["sentences"][:3] == ["Heart size is normal.", "No effusion.", "Normal."]
    assert batch["sentences_owner"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    ids = batch["sentences_ids"]
    assert ids[1] == ids[4] and ids[0] == ids[6] and ids[0] != ids[3]  # equal sentences, equal ids
    assert set(ds.all_texts()) >= set(batch["sentences"])  # the frozen tower's cache is filled with them
    clip = build_ct_clip(volume_tower="conv", embed_dim=8, widths=(4, 8), seed=0, sentence_weight=2.0,
                         text_sentence_mean=True, max_steps=2)  # fmt: skip
    assert [t.name for t in clip.losses] == ["clip", "sentences"] and clip.losses[1].weight == 2.0
    assert clip.towers["text"].sentence_mean
    before = next(iter(clip.towers["image"].parameters())).detach().clone()
    fit_clip(clip, VolumeTextSet(x, texts, torch.zeros(4, 2), sentences=True), max_steps=2, batch_size=4)
    after = next(iter(clip.towers["image"].parameters())).detach()
    assert not torch.equal(before, after)


def test_class_directions_and_alignment_match_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 6, generator=g)
    y = (torch.rand(40, 3, generator=g) < 0.4).long()
    y[:, 2] = 1  # no negatives -> NaN row
    d = class_directions(e, y)
    en = e / e.norm(dim=1, keepdim=True)
    for c in range(2):
        ref = en[y[:, c] == 1].mean(0) - en[y[:, c] == 0].mean(0)
        assert torch.allclose(d[c], ref / ref.norm(), atol=1e-6)
    assert torch.isnan(d[2]).all()
    a = direction_alignment(d[:2], 3 * d[:2])
    assert torch.allclose(a, torch.tensor([[1.0, float(d[0] @ d[1])], [float(d[0] @ d[1]), 1.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        class_directions(e, y[:10])


def test_prompt_directions_rank_like_the_softmax_pair_scores() -> None:
    """Ranking features by cosine with a pair's direction is the ranking the pair's softmax gives."""
    from vlp_core.eval import multilabel_zero_shot

    g = torch.Generator().manual_seed(1)
    table = {t: torch.randn(5, generator=g) for t in ["a+", "a-", "b+", "b-"]}
    enc = lambda texts: torch.stack([table[t] for t in texts])  # noqa: E731
    prompts = {"a": (["a+"], ["a-"]), "b": (["b+"], ["b-"])}
    dirs = prompt_directions(enc, prompts)
    f = torch.randn(30, 5, generator=g)
    scores = multilabel_zero_shot(f, enc, {k: v[0] for k, v in prompts.items()}, {k: v[1] for k, v in prompts.items()},
                                  mode="diff")  # fmt: skip
    cos = torch.nn.functional.normalize(f, dim=-1) @ dirs.T
    for c in range(2):
        assert torch.equal(scores[:, c].argsort(), cos[:, c].argsort())


def test_zeroshot_alignment_is_high_on_the_diagonal_for_an_aligned_toy_model() -> None:
    """A toy 'model' whose text and volume embeddings put finding k on axis k: every diagonal entry is 1."""
    axes = torch.eye(4)

    class _Text:
        def __call__(self, texts):
            from vlp_core.towers.base import TowerOutput

            rows = []
            for t in texts:
                v = axes[3].clone()
                for k, name in enumerate(["alpha", "beta", "gamma"]):
                    if f"{name} is present" in t or f"{name}." in t:
                        v += axes[k]
                rows.append(v)
            return TowerOutput(torch.stack(rows), None)

        def eval(self):
            return self

        training = False

        def train(self, mode=True):
            return self

    class _Model:
        towers = {"text": _Text()}

    names = ["alpha", "beta", "gamma"]
    prompts = {n: ([f"{n} is present."], [f"{n} is not present."]) for n in names}
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(60, 3, generator=g) < 0.5).long()
    reports = [" ".join(f"{n}." for k, n in enumerate(names) if y[i, k]) + " done" for i in range(60)]
    vol = y.float() @ axes[:3] + axes[3] + 0.01 * torch.randn(60, 4, generator=g)
    out = zeroshot_alignment(_Model(), prompts, reports, y, vol, y)
    assert set(out) == {"prompt vs report", "report vs volume", "prompt vs volume"}
    for m in out.values():
        assert m.shape == (3, 3)
        assert (m.diagonal() > 0.9).all(), m
        assert (m.diagonal()[:, None] > m + 1e-6).sum() >= 6  # each diagonal entry beats the off-diagonal ones


class _TableTower(torch.nn.Module):
    """A text tower that looks texts up in a table; its projection rescales the axes (not a rotation, so cosines
    change)."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("flip", torch.tensor([5.0, 0.1, 1.0, -2.0]))

    def pooled(self, texts):
        return torch.stack([self.table[t] for t in texts])

    def forward(self, texts):
        from vlp_core.towers.base import TowerOutput

        return TowerOutput(self.pooled(texts) * self.flip)


def test_report_text_zeroshot_matches_a_direct_computation_in_both_spaces() -> None:
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(3)
    reports = [f"report {i}" for i in range(60)]
    table = {t: torch.randn(4, generator=g) for t in reports + ["a+", "a-", "b+", "b-"]}
    y = (torch.rand(60, 2, generator=g) < 0.5).long()
    prompts = {"a": (["a+"], ["a-"]), "b": (["b+"], ["b-"])}
    tower = _TableTower(table)
    for projected in (False, True):
        res = report_text_zeroshot(tower, prompts, reports, y, projected=projected, batch_size=7)
        scale = tower.flip if projected else torch.ones(4)
        emb = lambda t, s=scale: torch.nn.functional.normalize(torch.stack([table[x] * s for x in t]), dim=-1)  # noqa: E731
        r = emb(reports)
        for c, name in enumerate(prompts):
            score = r @ emb(prompts[name][0])[0] - r @ emb(prompts[name][1])[0]
            ref = roc_auc_score(y[:, c].numpy(), score.numpy())
            assert res["per_class"][name]["auroc"] == pytest.approx(ref, abs=1e-6)
    # The projection rescales axes, so the two spaces really are scored separately.
    assert report_text_zeroshot(tower, prompts, reports, y)["per_class"]["a"]["auroc"] != pytest.approx(
        report_text_zeroshot(tower, prompts, reports, y, projected=True)["per_class"]["a"]["auroc"]
    )
    with pytest.raises(ValueError, match="reports x classes"):
        report_text_zeroshot(tower, prompts, reports, y[:, :1])


def test_report_text_zeroshot_ranks_reports_that_are_the_prompts_perfectly() -> None:
    """With the real MiniLM: a report worded exactly as the positive prompt scores cos 1 − cos(pos, neg) > 0, one
    worded as the negative prompt the opposite, so AUROC is exactly 1 (a sign or pairing bug gives 0)."""
    from vlp_ct3d.models import CTTextTower

    tower = CTTextTower(embed_dim=8)
    prompts = {"Pleural effusion": (["Pleural effusion is present."], ["Pleural effusion is not present."])}
    y = torch.tensor([[1], [0], [0], [1], [0]])
    reports = [prompts["Pleural effusion"][0 if v else 1][0] for v in y[:, 0].tolist()]
    for projected in (False, True):
        assert report_text_zeroshot(tower, prompts, reports, y, projected=projected)["macro_auroc"] == 1.0
    assert tower.training  # mode restored
