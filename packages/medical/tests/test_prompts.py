"""Zero-shot must be zero-shot: the disjoint prompts share no wording with the reports or the knowledge table."""

from __future__ import annotations

import re

import numpy as np

from vlp_medical.make import load_knowledge
from vlp_medical.prompts import (
    DISJOINT_NEGATIVES,
    DISJOINT_POOL_NEGATIVES,
    DISJOINT_PROMPTS,
    DISJOINT_PROMPTS_EXTRA,
    class_name_prompts,
    disjoint_pool,
    disjoint_prompts,
)
from vlp_medical.synth import _HEDGE_NAMES, _NEG, _POS, FINDINGS, sample_phantom, write_report


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


def _training_corpus() -> list[str]:
    rng = np.random.default_rng(0)
    reports = [write_report(sample_phantom(rng), rng)[0] for _ in range(3000)]
    # Every template, with every side/severity/zone filled, so rare phrasings are covered too.
    for f in FINDINGS:
        for t in _POS[f]:
            for side in ("right", "left", "bilateral"):
                for sev in ("small", "moderate", "large", "mild", "marked"):
                    for zone in ("upper", "lower"):
                        reports.append(t.format(sev=sev, side=side, Side=side.capitalize(), zone=zone))
        reports.extend(_NEG[f])
    reports.extend(_HEDGE_NAMES.values())
    for entry in load_knowledge("cxr").values():
        reports.append(entry["ontology"])
        for key in ("visual_concepts", "location", "morphology"):
            reports.extend(t.replace("{side}", "left").replace("{zone}", "upper") for t in entry[key])
    return reports


def test_disjoint_prompts_never_occur_in_reports_or_knowledge() -> None:
    corpus = _training_corpus()
    text = " \n ".join(c.lower() for c in corpus)
    grams = set().union(*(_trigrams(c) for c in corpus))
    prompts = [p for d in (DISJOINT_PROMPTS, DISJOINT_PROMPTS_EXTRA) for ps in d.values() for p in ps]
    prompts += DISJOINT_NEGATIVES
    pool = disjoint_pool()
    prompts += [p for spec in pool.values() for side in spec.values() for p in side]
    chosen = disjoint_prompts(chosen=True)
    assert all(spec["prompts"][0] in pool[c]["prompts"] for c, spec in chosen.items())  # chosen from the pool
    prompts += [p for spec in chosen.values() for side in spec.values() for p in side]
    assert set(DISJOINT_POOL_NEGATIVES) <= {n for spec in pool.values() for n in spec["negatives"]}
    for p in prompts:
        assert p.lower() not in text, p
        shared = _trigrams(p) & grams
        assert not shared, (p, shared)
    # Single prompts of one or two words must not be a report word sequence either.
    for p in prompts:
        if len(_words(p)) < 3:
            assert f" {' '.join(_words(p))} " not in " " + " ".join(_words(text)) + " ", p


def test_prompt_sets_cover_every_finding() -> None:
    assert set(class_name_prompts()) == set(disjoint_prompts()) == set(FINDINGS)
    assert class_name_prompts()["effusion"] == {"prompts": ["pleural effusion"], "negatives": ["no pleural effusion"]}


def test_prompt_ensembles_and_embedding_combination() -> None:
    import pytest
    import torch
    import torch.nn.functional as F

    from vlp_medical.bench import ensemble_embedding, zero_shot_scores

    ens = class_name_prompts(ensemble=True)["effusion"]
    assert ens["prompts"][0] == "pleural effusion" and ens["negatives"][0] == "no pleural effusion"
    assert len(ens["prompts"]) == len(ens["negatives"]) == 3
    dis = disjoint_prompts(ensemble=True)["nodule"]
    assert dis["prompts"][:2] == DISJOINT_PROMPTS["nodule"] and len(dis["prompts"]) == 4
    assert dis["negatives"] == DISJOINT_NEGATIVES

    class Toy:  # embeddings looked up from a table; cosine similarity
        probabilistic = False

        def __init__(self, table: dict[str, torch.Tensor]) -> None:
            self.table = table

        def encode_text(self, texts: list[str]) -> torch.Tensor:
            return torch.stack([self.table[t] for t in texts])

        def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    g = torch.Generator().manual_seed(0)
    table = {k: torch.randn(8, generator=g) * s for k, s in (("p1", 1.0), ("p2", 10.0), ("n", 1.0))}
    toy = Toy(table)
    img = torch.randn(5, 8, generator=g)
    prompts = {"c": {"prompts": ["p1", "p2"], "negatives": ["n"]}}
    sim = zero_shot_scores(toy, img, prompts, ["c"], combine="similarity")
    emb = zero_shot_scores(toy, img, prompts, ["c"], combine="embedding")
    cos = toy.similarity
    torch.testing.assert_close(sim[:, 0], 0.5 * (cos(img, table["p1"][None]) + cos(img, table["p2"][None]))[:, 0]
                               - cos(img, table["n"][None])[:, 0])  # fmt: skip
    mean = F.normalize(table["p1"], dim=0) + F.normalize(table["p2"], dim=0)  # unit embeddings averaged
    torch.testing.assert_close(emb[:, 0], cos(img, mean[None])[:, 0] - cos(img, table["n"][None])[:, 0])
    with pytest.raises(ValueError, match="combine"):
        zero_shot_scores(toy, img, prompts, ["c"], combine="max")
    # Probabilistic rows: unit mean of unit means, mean log-variance.
    mu = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    lv = torch.tensor([[-1.0, -3.0], [-3.0, -1.0]])
    out = ensemble_embedding(torch.cat([mu, lv], 1), probabilistic=True)
    torch.testing.assert_close(out, torch.tensor([[0.5**0.5, 0.5**0.5, -2.0, -2.0]]))
