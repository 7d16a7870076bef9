"""Text <-> video retrieval R@K: brute-force ranks with ties, the per-level pipeline and the zeroshot CLI output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlp_surgical.eval import evaluate_retrieval, level_retrieval, retrieval_embeddings
from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures
from vlp_surgical.training import ProcedureCorpus


def _brute(query: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """Query i's positive is gallery i; ties with negatives are broken uniformly at random (enumerated exactly)."""
    # Elementwise products summed per pair (not a blocked matmul): identical rows give bitwise-identical scores.
    s = (F.normalize(query.double(), dim=1)[:, None, :] * F.normalize(gallery.double(), dim=1)[None]).sum(-1)
    ranks, hits = [], {k: [] for k in ks}
    for i in range(s.shape[0]):
        others = torch.cat((s[i, :i], s[i, i + 1 :]))
        above, tied = int((others > s[i, i]).sum()), int((others == s[i, i]).sum())
        positions = [1 + above + j for j in range(tied + 1)]  # every place of the positive among its ties
        ranks.append(sum(positions) / len(positions))
        for k in ks:
            hits[k].append(sum(p <= k for p in positions) / len(positions))
    out = {f"R@{k}": sum(h) / len(h) for k, h in hits.items()}
    out["mean_rank"] = sum(ranks) / len(ranks)
    out["median_rank"] = float(torch.tensor(ranks).median()) if len(ranks) % 2 else None  # odd n: exact median
    return out


def test_level_retrieval_matches_brute_force_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 23, 6
    visual = torch.randn(n, d, generator=g)
    text = visual + 1.2 * torch.randn(n, d, generator=g)  # informative but imperfect pairing
    # Identical narrations (the generator repeats sentences) and identical clips: exact ties in both directions.
    text[5] = text[3]
    text[9] = text[3]
    visual[12] = visual[7]
    res = level_retrieval(visual, text, ks=(1, 5, 10))
    for direction, (q, gal) in {"text_to_video": (text, visual), "video_to_text": (visual, text)}.items():
        ref = _brute(q, gal, (1, 5, 10))
        m = res[direction]
        for key in ("R@1", "R@5", "R@10", "mean_rank"):
            assert m[key] == pytest.approx(ref[key], abs=1e-9), (direction, key)
        assert m["median_rank"] == pytest.approx(ref["median_rank"])
        assert m["n_queries"] == n and m["gallery"] == n and m["chance_R@1"] == pytest.approx(1 / n)
    # The ties matter: video->text for clip 3 ties with narrations 5 and 9 (counted as 2 / 2 = one extra rank).
    from vlp_core.eval.retrieval import retrieval_ranks

    pessimistic = retrieval_ranks(visual, text, ties="pessimistic").double().mean()
    assert float(pessimistic) > res["video_to_text"]["mean_rank"] + 1e-6


def test_level_retrieval_perfect_random_and_trivial_k() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 8, generator=g)
    perfect = level_retrieval(x, x)
    assert perfect["text_to_video"]["R@1"] == 1.0 and perfect["video_to_text"]["mean_rank"] == 1.0
    # Reversed pairing of orthogonal-ish items: the positive is never first.
    flipped = level_retrieval(x, x.flip(0))
    assert flipped["text_to_video"]["R@1"] == 0.0
    # Collapsed embeddings: every item ties, so R@1 is chance (1/n) and the mean rank is (n + 1) / 2.
    same = level_retrieval(torch.ones(8, 4), torch.ones(8, 4), ks=(1, 5, 10))
    assert same["text_to_video"]["R@1"] == pytest.approx(1 / 8)
    assert same["text_to_video"]["R@5"] == pytest.approx(5 / 8)
    assert same["text_to_video"]["mean_rank"] == pytest.approx(4.5)
    assert same["text_to_video"]["R@10"] is None  # K >= gallery size: trivially 1, not reported
    with pytest.raises(ValueError, match="paired"):
        level_retrieval(x, x[:5])


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedures(tmp_path_factory.mktemp("proc"), n_train=1, n_val=1, n_test=2, size=32,
                           phase_seconds=(2.0, 3.0), seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> HecVL:
    torch.manual_seed(0)
    return HecVL(img_size=16, frame_dim=16, embed_dim=16).eval()


def test_evaluate_retrieval_pairs_segments_with_their_texts(corpus_root: Path, model: HecVL) -> None:
    items = ProcedureCorpus(corpus_root, "test").items
    emb = retrieval_embeddings(model, items)
    n_clips = sum(len(p.clips) for it in items for p in it.hierarchy.phases)
    assert emb["clip"][0].shape[0] == emb["clip"][1].shape[0] == n_clips
    assert emb["phase"][0].shape[0] == 14 and emb["video"][0].shape[0] == 2
    # The visual side of a phase equals the phase's frames pooled and projected on their own.
    it = items[1]
    ph = it.hierarchy.phases[2]
    a, b = int(ph.start), int(min(it.frames.shape[0], -(-ph.end // 1)))
    with torch.no_grad():
        feats = model.encode_frames(it.frames[a:b])
        own = model.vis_proj["phase"](model.pool_segments(feats, torch.tensor([[0, b - a]]))[0])
    torch.testing.assert_close(emb["phase"][0][7 + 2], own[0], rtol=1e-4, atol=1e-5)
    # Text side: the phase summary in the phase space.
    torch.testing.assert_close(emb["phase"][1][7 + 2], model.encode_text([ph.text], "phase")[0].detach())
    rows = evaluate_retrieval(model, items)
    assert [(r["level"], r["direction"]) for r in rows] == [
        (lv, d) for lv in ("clip", "phase", "video") for d in ("text_to_video", "video_to_text")
    ]
    for r in rows:
        ref = _brute(*((emb[r["level"]][1], emb[r["level"]][0]) if r["direction"] == "text_to_video"
                       else emb[r["level"]]), (1,))  # fmt: skip
        assert r["R@1"] == pytest.approx(ref["R@1"], abs=1e-6)
        assert r["mean_rank"] == pytest.approx(ref["mean_rank"], abs=1e-6)


def test_zeroshot_cli_writes_retrieval_rows(corpus_root: Path, model: HecVL, tmp_path: Path) -> None:
    from vlp_surgical.cli import zeroshot

    model.save_pretrained(str(tmp_path / "ckpt"))
    rows = zeroshot(ckpt=str(tmp_path / "ckpt"), root=str(corpus_root), source="frames", out=str(tmp_path / "zs"))
    payload = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert [r["row"] for r in payload["retrieval"]][:2] == ["retrieval clip text→video", "retrieval clip video→text"]
    assert len(payload["retrieval"]) == 6 and (tmp_path / "zs" / "retrieval.csv").is_file()
    assert rows[0]["row"] == "zero-shot" and rows[-1]["row"] == "retrieval video video→text"
    assert payload["retrieval"][-1]["R@5"] is None  # two test videos: R@5 would be trivially 1
