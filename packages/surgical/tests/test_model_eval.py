"""HecVL model, batch assembly, objective, generator, zero-shot prompts and metrics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vlp_surgical.annotations import CHOLEC80_PHASES, read_cholec80_phases
from vlp_surgical.eval import PHASE_PROMPTS, phase_metrics
from vlp_surgical.models import HecVL, TemporalAggregator
from vlp_surgical.synth import CLIP_TEMPLATES, PHASE_SUMMARIES, SYNONYMS, make_procedures
from vlp_surgical.training import HecVLObjective, ProcedureCorpus, build_batch


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedures(tmp_path_factory.mktemp("proc"), n_train=2, n_val=1, n_test=1, size=32,
                           phase_seconds=(2.0, 3.0), seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> HecVL:
    torch.manual_seed(0)
    return HecVL(img_size=16, frame_dim=16, embed_dim=16)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_prompts_never_reuse_narration_wording(corpus_root: Path) -> None:
    narr = pd.read_csv(corpus_root / "narrations.csv")["text"].tolist()
    # Every text the generator can write: its templates with every synonym, plus what it wrote here.
    vocab_texts = list(narr)
    for templates in list(CLIP_TEMPLATES.values()) + list(PHASE_SUMMARIES.values()):
        for t in templates:
            for key, words in SYNONYMS.items():
                t = t.replace("{" + key + "}", " ".join(words))
            vocab_texts.append(t)
    narr_grams = set().union(*(_ngrams(t, 4) for t in vocab_texts))
    for dataset, prompts in PHASE_PROMPTS.items():
        for phase, texts in prompts.items():
            for p in texts:
                assert not any(p.lower().strip(".") in t for t in narr), (dataset, p)
                shared = _ngrams(p, 4) & narr_grams
                assert not shared, (dataset, phase, shared)
    assert set(PHASE_PROMPTS["cholec80"]) == set(CHOLEC80_PHASES)


def test_generator_writes_public_formats(corpus_root: Path) -> None:
    import json

    from vlp_surgical.narration import read_narrations
    from vlp_surgical.video import FrameFolder, PyAVBackend

    splits = json.loads((corpus_root / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    vid = splits["test"][0]
    info = PyAVBackend().info(corpus_root / "videos" / f"{vid}.mp4")
    ann = read_cholec80_phases(corpus_root / "phase_annotations" / f"{vid}-phase.txt", sample_fps=None,
                               n_frames=info.n_frames)  # fmt: skip
    assert info.fps == 25 and len(ann) == info.n_frames
    assert FrameFolder(corpus_root / "frames" / vid).n_frames == int(np.ceil(info.n_frames / 25))
    first = ann.groupby("label")["frame"].min().sort_values()
    assert first.index.tolist()[:5] == [0, 1, 2, 3, 4]  # phases in procedure order
    n = read_narrations(corpus_root / "narrations.csv")
    v = n.videos[vid]
    assert len(v.phases) == 7 and all(p.clips for p in v.phases) and v.abstract


def test_temporal_aggregator_ignores_padding() -> None:
    for kind in ("mean", "transformer"):
        torch.manual_seed(0)
        agg = TemporalAggregator(8, kind).eval()
        x = torch.randn(2, 5, 8)
        mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
        pooled, _ = agg(x, mask)
        x2 = x.clone()
        x2[1, 2:] = 50.0
        torch.testing.assert_close(agg(x2, mask)[0], pooled)
        torch.testing.assert_close(agg(x[1:, :2], mask[1:, :2])[0], pooled[1:], rtol=1e-5, atol=1e-5)


def test_batch_keeps_child_order_and_objective_trains(corpus_root: Path, model: HecVL) -> None:
    corpus = ProcedureCorpus(corpus_root, "train")
    batch = build_batch(corpus.items)
    first = corpus.items[0].hierarchy
    assert batch["phase_texts"][:7] == [p.text for p in first.phases]
    assert batch["phase_children"][0] == [c.text for c in first.phases[0].clips]
    seg = batch["phase_segments"]
    assert bool((seg[1:7, 0] >= seg[:6, 0]).all())  # temporal order within the first video
    n0 = corpus.items[0].frames.shape[0]
    assert batch["video_segments"].tolist() == [[0, n0], [n0, n0 + corpus.items[1].frames.shape[0]]]
    objective = HecVLObjective(dtw_weight=1.0)
    out = objective(model, batch)
    for key in ("clip", "phase", "phase_children", "video", "dtw_video", "dtw_phase"):
        assert torch.isfinite(out[key]), key
    out["loss"].backward()
    grads = [p.grad for p in [*model.vis_proj.parameters(), *model.backbone.parameters()] if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_save_and_load_round_trip(tmp_path: Path, model: HecVL) -> None:
    model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = HecVL.from_pretrained(str(tmp_path / "ckpt")).eval()
    frames = torch.randint(0, 255, (3, 20, 20, 3), dtype=torch.uint8)
    torch.testing.assert_close(loaded.frame_embeddings(frames), model.eval().frame_embeddings(frames))
    (tmp_path / "ckpt" / "config.json").write_text('{"class": "os.system"}')
    with pytest.raises(ValueError, match="does not describe"):
        HecVL.from_pretrained(str(tmp_path / "ckpt"))


def test_phase_metrics_match_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    ys = [rng.integers(0, 7, 50), rng.integers(0, 4, 30)]
    ps = [np.where(rng.random(50) < 0.6, ys[0], rng.integers(0, 7, 50)), rng.integers(0, 7, 30)]
    m = phase_metrics(ys, ps, 7)
    f1v = np.mean([metrics.f1_score(y, p, average="macro", labels=sorted(set(y) | set(p))) for y, p in zip(ys, ps)])
    assert m["f1_video"] == pytest.approx(f1v)
    assert m["acc_video"] == pytest.approx(np.mean([metrics.accuracy_score(y, p) for y, p in zip(ys, ps)]))
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert m["acc_global"] == pytest.approx(metrics.accuracy_score(y, p))
    assert m["f1_global"] == pytest.approx(metrics.f1_score(y, p, average="macro"))
    m_all = phase_metrics(ys, ps, 7, f1_labels="all")
    f1_all = np.mean([metrics.f1_score(y, p, average="macro", labels=list(range(7)), zero_division=0)
                      for y, p in zip(ys, ps)])  # fmt: skip
    assert m_all["f1_video"] == pytest.approx(f1_all)
