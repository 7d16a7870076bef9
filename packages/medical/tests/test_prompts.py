"""Zero-shot must be zero-shot: the disjoint prompts share no wording with the reports or the knowledge table."""

from __future__ import annotations

import re

import numpy as np

from vlp_medical.make import load_knowledge
from vlp_medical.prompts import (
    DISJOINT_NEGATIVES,
    DISJOINT_PROMPTS,
    DISJOINT_PROMPTS_EXTRA,
    class_name_prompts,
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
