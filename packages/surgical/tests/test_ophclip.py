"""OphCLIP silent clips: the generator leaves narrations out, the corpus loads their spans, training refreshes the
bank on schedule and uses retrieved silent clips as extra positives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures
from vlp_surgical.training import HecVLObjective, ProcedureCorpus, build_batch, pretrain

KW = {"n_train": 2, "n_val": 0, "n_test": 0, "size": 32, "phase_seconds": (2.0, 3.5), "seed": 0}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("oph")
    return make_procedures(base / "full", **KW), make_procedures(base / "silent", silent_fraction=0.5, **KW)


def test_generator_drops_clip_narrations_into_silent_table(roots: tuple[Path, Path]) -> None:
    full, silent = roots
    a, b = pd.read_csv(full / "narrations.csv"), pd.read_csv(silent / "narrations.csv")
    s = pd.read_csv(silent / "silent_clips.csv")
    assert pd.read_csv(full / "silent_clips.csv").empty
    # Same procedure, same narrated rows: the silent clips are exactly the clip rows that were left out.
    assert set(b["id"]) <= set(a["id"]) and set(s["id"]) == set(a["id"]) - set(b["id"])
    assert 0.3 < len(s) / int((a["level"] == "clip").sum()) < 0.7
    merged = s.merge(a, on="id", suffixes=("", "_full"))
    assert (merged["start"] == merged["start_full"]).all() and (merged["level"] == "clip").all()
    pd.testing.assert_frame_equal(b[b["level"] != "clip"].reset_index(drop=True),
                                  a[a["level"] != "clip"].reset_index(drop=True))  # fmt: skip
    corpus = ProcedureCorpus(silent, "train")
    it = corpus.items[0]
    want = s[s["video_id"] == it.video_id]
    assert it.silent == list(zip(want["start"].astype(float), want["end"].astype(float)))
    assert sum(len(p.clips) for p in it.hierarchy.phases) == int(((b["video_id"] == it.video_id)
                                                                  & (b["level"] == "clip")).sum())  # fmt: skip


@pytest.fixture(scope="module")
def corpus(roots: tuple[Path, Path]) -> ProcedureCorpus:
    return ProcedureCorpus(roots[1], "train")


def test_refresh_bank_encodes_silent_clips_without_side_effects(corpus: ProcedureCorpus) -> None:
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16).train()
    before = {k: v.clone() for k, v in model.named_buffers()}
    objective = HecVLObjective(dtw_weight=0.0, retrieval_weight=1.0, retrieval_k=2, refresh_every=3)
    assert objective.bank.due(0)
    size = objective.refresh_bank(model, corpus.items, step=0)
    assert size == sum(len(it.silent) for it in corpus.items) > 0
    for k, v in model.named_buffers():
        torch.testing.assert_close(v, before[k])  # batch-norm statistics untouched
    # Entry 0 = first silent clip of the first video with one, pooled and projected on its own.
    it = next(i for i in corpus.items if i.silent)
    a, b = it.silent[0]
    with torch.no_grad():
        feats = model.encode_frames(it.frames)
        seg = torch.tensor([[int(a), max(int(a) + 1, min(it.frames.shape[0], int(-(-b // 1))))]])
        ref = torch.nn.functional.normalize(model.vis_proj["clip"](model.pool_segments(feats, seg)[0]), dim=-1)
    torch.testing.assert_close(objective.bank.bank[0], ref[0], rtol=1e-4, atol=1e-5)
    assert not objective.bank.due(2) and objective.bank.due(3)


def test_retrieval_term_adds_positives_and_pretrain_refreshes_on_schedule(
    corpus: ProcedureCorpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16)
    batch = build_batch(corpus.items)
    objective = HecVLObjective(dtw_weight=0.0, retrieval_weight=0.5, refresh_every=2)
    assert "clip_retrieval" not in objective(model, batch)  # empty bank: no term
    objective.refresh_bank(model, corpus.items, 0)
    out = objective(model, batch)
    base = HecVLObjective(dtw_weight=0.0)(model, batch)
    torch.testing.assert_close(out["loss"], base["loss"] + 0.5 * out["clip_retrieval"])
    # Extra positives change the loss: with bank_weight 0 the term is plain InfoNCE over clips + bank negatives.
    plain = HecVLObjective(dtw_weight=0.0, retrieval_weight=0.5, bank_weight=0.0)
    plain.bank = objective.bank
    assert not torch.isclose(plain(model, batch)["clip_retrieval"], out["clip_retrieval"])
    calls = []
    real = HecVLObjective.refresh_bank

    def spy(self, model, items, step, fps=1.0, batch_size=256):
        calls.append(step)
        return real(self, model, items, step, fps, batch_size)

    monkeypatch.setattr(HecVLObjective, "refresh_bank", spy)
    fresh = HecVLObjective(dtw_weight=0.0, retrieval_weight=0.5, refresh_every=2)
    hist = pretrain(model, corpus, fresh, steps=5, videos_per_batch=2, seed=0)
    assert calls == [0, 2, 4]
    assert all("clip_retrieval" in h for h in hist)
    pretrain(model, corpus, HecVLObjective(dtw_weight=0.0), steps=1, videos_per_batch=2, seed=0)
    assert calls == [0, 2, 4]  # retrieval off: no bank work
