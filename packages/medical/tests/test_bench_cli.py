"""`vlp-medical bench` end to end on a small phantom tree: suite YAML, several checkpoints, one table, CSV/JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from vlp_medical.bench import Suite, format_table, summarise
from vlp_medical.cli import main
from vlp_medical.models import build_model
from vlp_medical.prompts import class_name_prompts, disjoint_pool, disjoint_prompts
from vlp_medical.synth import FINDINGS, make_fake_mimic_cxr

TINY = {"img_size": 32, "patch_size": 8, "depth": 1}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_mimic_cxr(tmp_path_factory.mktemp("ph"), 90, size=48, seed=5, n_lateral=2)


def test_bench_cli_compares_checkpoints(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpts = []
    for i, method in enumerate(("clip", "probmed")):
        torch.manual_seed(i)
        model = build_model(method, embed_dim=16, image_tower=TINY, text_max_length=32)
        ckpts.append(str(model.save_pretrained(tmp_path / method)))
    suite = {
        "name": "tiny", "dataset": {"kind": "mimic", "root": str(tree)}, "classes": list(FINDINGS),
        "labels": {"path": "phantom_truth.csv", "key": "dicom_id"}, "image": {"size": 32},
        "prompt_sets": {"class names": class_name_prompts(), "disjoint": disjoint_prompts()},
        "prompt_pools": {"disjoint": disjoint_pool()},
        "fractions": [0.5, 1.0], "seeds": [42, 0], "probe_weight_decays": [1e-3, 1.0], "probe_max_iter": 20,
        "finetune_steps": 4, "finetune_eval_every": 2, "finetune_fractions": [1.0], "finetune_seeds": [0],
    }  # fmt: skip
    (tree / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert main(["bench", "--ckpt+", ckpts[0], "--ckpt+", ckpts[1], "--suite", str(tree / "suite.yaml"),
                 "--out", str(tmp_path / "res")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| task | metric | clip | probmed |" in printed
    summary = pd.read_csv(tmp_path / "res" / "bench.csv")
    assert set(summary["method"]) == {"clip", "probmed"}
    tasks = set(summary["task"])
    assert {"zero-shot [class names]", "zero-shot [disjoint]", "linear probe 0.5", "linear probe 1",
            "retrieval image→report", "retrieval report→image", "zero-shot [disjoint (val-selected)]",
            "fine-tune 1"} <= tasks  # fmt: skip
    unc = summary[summary["task"] == "uncertainty"]
    assert set(unc["method"]) <= {"probmed"}  # only probabilistic models
    if len(unc):  # the tiny untrained model may retrieve everything wrong, then the AUROC is undefined
        v = dict(zip(unc["metric"], unc["mean"]))
        auc = "AUROC(Σσ² → wrong top-1 i→t)"
        assert v[f"{auc} 95% CI low"] <= v[auc] <= v[f"{auc} 95% CI high"], v
        assert v["correct top-1 queries"] >= 1
    probe = summary[summary["task"] == "linear probe 1"]
    assert set(probe["method"]) == {"clip", "probmed"}  # every task for every checkpoint
    assert (probe["n"] == 2).all()  # two seeds -> mean ± std
    assert summary["mean"].between(0, 90).all()
    runs = json.loads((tmp_path / "res" / "bench.json").read_text())
    assert runs["suite"]["seeds"] == [42, 0] and len(runs["runs"]) > len(summary)
    picked = [json.loads(r["selected"]) for r in runs["runs"] if r["task"] == "zero-shot [disjoint (val-selected)]"
              and r["metric"] == "macro AUROC"]  # fmt: skip
    assert len(picked) == 2  # one choice per checkpoint, recorded with its number
    pool = disjoint_pool()
    for choice in picked:
        for c, spec in choice.items():
            assert spec["prompts"][0] in pool[c]["prompts"] and spec["negatives"][0] in pool[c]["negatives"]


def test_suite_validation_and_table_format(tmp_path: Path) -> None:
    bad = {"name": "x", "dataset": {"kind": "mimic", "root": "."}, "classes": ["a"], "prompt_sets": {"p": {}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="prompt set 'p' has no prompts for \\['a'\\]"):
        Suite.from_yaml(tmp_path / "s.yaml")
    (tmp_path / "u.yaml").write_text(yaml.safe_dump({**bad, "typo": 1}))
    with pytest.raises(ValueError, match="unknown keys"):
        Suite.from_yaml(tmp_path / "u.yaml")
    rows = [{"method": m, "task": "probe", "metric": "AUROC", "seed": s, "value": v}
            for m, vals in (("A", (0.6, 0.8)), ("B", (0.7,))) for s, v in enumerate(vals)]  # fmt: skip
    table = format_table(summarise(rows))
    assert "| probe | AUROC | 0.700 ± 0.141 | 0.700 |" in table


def test_help_lists_commands(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("fit", "bench", "generate", "demo"))


class _Fixed:
    """A stand-in model whose text embeddings are looked up from a table (to control every similarity)."""

    def __init__(self, table: dict[str, torch.Tensor], similarity: torch.nn.Module) -> None:
        self.table, self.similarity = table, similarity

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([self.table[t] for t in texts])


def test_bench_retrieval_scores_ties_the_mean_way_and_matches_brute_force() -> None:
    from vlp_core.similarity import CosineSimilarity
    from vlp_medical.bench import _retrieval

    texts = ["a", "b", "a", "c", "d", "b"]  # image i's report; "a" and "b" are shared by two images
    g = torch.Generator().manual_seed(0)
    table = {t: torch.randn(8, generator=g) for t in "abcd"}
    # Degenerate model: every similarity equal. Mean ties: rank = 1 + (4 - 1) / 2 = 2.5 for every image -> R@1 = 0.
    flat = _Fixed({t: torch.ones(8) for t in "abcd"}, CosineSimilarity())
    out, ranks = _retrieval(flat, torch.ones(6, 8), texts, ks=(1, 5))
    assert torch.allclose(ranks.double(), torch.full((6,), 2.5, dtype=torch.float64))
    assert out["i2t_R@1"] == 0.0 and out["i2t_R@5"] == 1.0
    # Random embeddings: ranks equal a brute-force count over the unique texts (no ties with random floats).
    model = _Fixed(table, CosineSimilarity())
    img = torch.randn(6, 8, generator=g)
    out, ranks = _retrieval(model, img, texts, ks=(1,))
    unique = sorted(set(texts))
    sim = (
        torch.nn.functional.normalize(img, dim=1)
        @ torch.nn.functional.normalize(torch.stack([table[t] for t in unique]), dim=1).T
    )
    want = [1 + int((sim[i] > sim[i, unique.index(t)]).sum()) for i, t in enumerate(texts)]
    assert ranks.tolist() == want
    assert out["i2t_R@1"] == sum(r == 1 for r in want) / 6


def test_select_prompts_decides_on_validation_data_only() -> None:
    from vlp_core.similarity import CosineSimilarity
    from vlp_medical.bench import select_prompts, zero_shot_scores

    e = torch.eye(4)
    model = _Fixed({"good": e[0], "bad": e[1], "neg": e[2], "other": e[3]}, CosineSimilarity())
    pool = {"x": {"prompts": ["good", "bad"], "negatives": ["neg"]}, "y": {"prompts": ["other", "good"],
            "negatives": ["neg"]}}  # fmt: skip
    # Validation: "bad" separates class x perfectly, "good" is reversed. Test data would say the opposite.
    val_img = torch.stack([e[1] + 0.1 * e[0], e[1], e[0], e[0] + 0.1 * e[1]])
    val_y = torch.tensor([[1.0, float("nan")], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    chosen = select_prompts(model, val_img, val_y, pool, ["x", "y"])
    assert chosen["x"] == {"prompts": ["bad"], "negatives": ["neg"]}
    # y has a single label value among known rows -> nothing to select on: the pool's first pair.
    assert chosen["y"] == {"prompts": ["other"], "negatives": ["neg"]}
    test_img = torch.stack([e[0], e[0], e[1], e[1]])
    test_y = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    scores = zero_shot_scores(model, test_img, {"x": chosen["x"]}, ["x"])[:, 0]
    assert (scores[test_y[:, 0] == 1] < scores[test_y[:, 0] == 0].min()).all()  # the val choice is wrong on test
