"""The zero-shot protocol cannot be fooled by wording: descriptive prompts share no content word with reports."""

from __future__ import annotations

import re

import numpy as np

from vlp_ecg.eval import CLASS_PROMPTS, DESCRIPTIVE_PROMPTS, PROMPT_SETS, prompt_set
from vlp_ecg.synth import CLASSES, make_fake_mimic, report_vocabulary, synthesize_ecg

# Function words only: they carry no class information.
FUNCTION_WORDS = {"a", "an", "the", "of", "in", "with", "and", "at", "is", "are", "by", "for", "to", "on", "than",
                  "or", "from", "each", "before", "after", "between", "over", "under", "above", "more", "near"}  # fmt: skip


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z'-]*|[0-9]+", text.lower()))


def test_descriptive_prompts_disjoint_from_report_vocabulary() -> None:
    vocab = report_vocabulary()
    # The declared vocabulary really covers what the generator writes (2,000 reports of every style).
    written: set[str] = set()
    for seed in range(300):
        written |= _words(synthesize_ecg(None, fs=100, duration=4.0, seed=seed).report)
    assert written - vocab <= {str(n) for n in range(1000)}, sorted(written - vocab)
    prompt_words = set()
    for name in ("descriptive", "descriptive_ensemble"):  # every set that claims disjoint wording
        prompts_by_class, templates = PROMPT_SETS[name]
        for prompts in prompts_by_class.values():
            for p in prompts:
                for t in templates:
                    prompt_words |= _words(t.format(p))
    shared = (prompt_words & (vocab | written)) - FUNCTION_WORDS
    assert not shared, f"descriptive prompts reuse report words: {sorted(shared)}"
    # Guard against a trivially passing check: the clinical set does overlap (it uses the clinical terms).
    clinical = {w for c in CLASSES for p in CLASS_PROMPTS[c] for w in _words(p)}
    assert len(clinical & vocab) > 10
    assert set(CLASSES) <= set(DESCRIPTIVE_PROMPTS)
    # The ensemble is the descriptive set plus more phrasings, for every demo class, without duplicates.
    ens, _ = prompt_set("descriptive_ensemble", CLASSES)
    base, _ = prompt_set("descriptive", CLASSES)
    for c in CLASSES:
        assert ens[c][: len(base[c])] == base[c] and len(ens[c]) >= len(base[c]) + 3
        assert len(set(ens[c])) == len(ens[c])


def test_reports_are_realistic() -> None:
    reps = [synthesize_ecg(None, fs=100, duration=10.0, seed=s) for s in range(80)]
    texts = [e.report.lower() for e in reps]
    assert any("vent. rate" in t and "qt/qtc" in t for t in texts)  # machine measurement line
    assert any(t.startswith(("sr.", "sb.", "af", "nsr", "st.", "sinus")) and "ms" not in t for t in texts)  # short
    assert any(re.search(r"\bno (acute st|ectopy|av block|bundle branch|st elevation)", t) for t in texts)
    assert any(re.search(r"unconfirmed|compared with|no previous ecg", t) for t in texts)
    assert len(set(texts)) == len(texts)
    # The measured rate in the report is the signal's rate.
    for e in reps:
        m = re.search(r"vent\. rate (\d+) bpm", e.report.lower())
        if m:
            rr = np.median(np.diff(e.rpeaks)) / e.fs
            assert abs(int(m.group(1)) - 60 / rr) < 2
    # Negations never contradict the labels.
    for e in reps:
        t = e.report.lower()
        if "no bundle branch block" in t or "narrow qrs" in t:
            assert not {"CLBBB", "CRBBB"} & set(e.labels)
        if "no st elevation" in t or "no acute st" in t:
            assert "STE_" not in e.labels


def test_measurements_follow_the_labels() -> None:
    bb = synthesize_ecg(["SR", "CLBBB"], fs=500, seed=4).params["measurements"]
    avb = synthesize_ecg(["SR", "1AVB"], fs=500, seed=4).params["measurements"]
    af = synthesize_ecg(["AFIB"], fs=500, seed=4).params["measurements"]
    assert bb.qrs >= 120 and avb.pr > 200 and af.pr is None and af.p_axis is None
    norm = synthesize_ecg(["SR"], fs=500, seed=4, noise=False).params["measurements"]
    assert -30 <= norm.qrs_axis <= 100 and norm.qrs < 110 and 340 < norm.qtc < 470


def test_mimic_measurement_columns(tmp_path) -> None:
    import pandas as pd

    root = make_fake_mimic(tmp_path / "m", n=6, seed=2)
    mm = pd.read_csv(root / "machine_measurements.csv")
    assert (mm["qrs_end"] - mm["qrs_onset"]).between(70, 170).all()
    assert ((mm["p_onset"] == 29999) == (mm["p_axis"] == 29999)).all()


def test_leakage_guard_refuses_statement_text(fake_ptbxl, tmp_path) -> None:
    import pytest

    from vlp_ecg.cli import prepare, zeroshot
    from vlp_ecg.eval import LabelTextLeakageError, check_label_text
    from vlp_ecg.models import MELP

    assert check_label_text("report") is True and check_label_text(None) is True
    with pytest.raises(LabelTextLeakageError, match="supervised classification, not zero-shot"):
        check_label_text("statements")
    assert check_label_text("statements", allow_label_text=True) is False
    store = tmp_path / "stmt_store"
    prepare("ptbxl", str(fake_ptbxl), str(store), labels="all", text="statements", progress=False)
    model = MELP(size="tiny", embed_dim=16, token_dim=16, text_max_length=16, weights={"token": 0, "beat": 0})
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(LabelTextLeakageError):  # the store remembers how its text was built
        zeroshot(str(tmp_path / "m"), store=str(store), classes=["AFIB", "CLBBB"], n_boot=0, out=str(tmp_path / "z"))
    res = zeroshot(str(tmp_path / "m"), store=str(store), classes=["AFIB", "CLBBB"], n_boot=0, allow_label_text=True,
                   out=str(tmp_path / "z"))  # fmt: skip
    assert res["zero_shot"] is False and "NOT zero-shot" in res["warning"]
    assert '"zero_shot": false' in (tmp_path / "z" / "zeroshot.json").read_text()


def test_shared_evaluation_controls_and_shuffled_pairs(fake_store) -> None:
    import pytest
    import torch

    from vlp_ecg.datasets import ECGStore, ECGTextDataset
    from vlp_ecg.eval import evaluate_model, prompt_set, random_encoder_control, rhythm_groups
    from vlp_ecg.models import MELP

    torch.manual_seed(0)
    model = MELP(size="tiny", embed_dim=16, token_dim=16, text_max_length=16, weights={"token": 0, "beat": 0})
    test = ECGTextDataset(ECGStore(fake_store), "test")
    res = evaluate_model(model, test, ["SR", "AFIB", "CLBBB"], n_boot=20)
    assert set(res) == {"clinical", "descriptive"} and res["descriptive"]["prompt_set"] == "descriptive"
    assert rhythm_groups(["SR", "AFIB", "CLBBB"]) == [["SR", "AFIB"]] and rhythm_groups(["SR", "PVC"]) == []
    # The descriptive set never guesses a description it does not have (evaluate_model then skips the set).
    with pytest.raises(KeyError, match="no description of"):
        prompt_set("descriptive", ["SR", "XYZ"])
    assert prompt_set("clinical", ["SR", "XYZ"])[0]["XYZ"] == ["xyz"]
    ctrl = random_encoder_control(model, seed=1)
    x = torch.randn(2, 12, 1000)
    model.eval(), ctrl.eval()
    with torch.no_grad():
        assert not torch.allclose(ctrl.towers["ecg"](x).embedding, model.towers["ecg"](x).embedding)
        assert torch.equal(
            ctrl.towers["text"](["sinus rhythm"]).embedding, model.towers["text"](["sinus rhythm"]).embedding
        )
    # Shuffled pairs: same ECGs and the same multiset of reports, but no report stays with its own ECG.
    plain = ECGTextDataset(ECGStore(fake_store), "train")
    shuf = ECGTextDataset(ECGStore(fake_store), "train", shuffle_pairs=True)
    assert sorted(plain.frame["text"]) == sorted(shuf.frame["text"])
    assert (plain.frame["text"] == shuf.frame["text"]).mean() < 0.1
    assert torch.equal(plain[3]["ecg"]["signal"], shuf[3]["ecg"]["signal"])


def test_random_encoder_controls_average_independent_draws(fake_store) -> None:
    import numpy as np
    import torch

    from vlp_ecg.datasets import ECGStore, ECGTextDataset
    from vlp_ecg.eval import evaluate_model, random_encoder_control, random_encoder_controls
    from vlp_ecg.models import MELP

    torch.manual_seed(0)
    model = MELP(size="tiny", embed_dim=16, token_dim=16, text_max_length=16, weights={"token": 0, "beat": 0})
    test = ECGTextDataset(ECGStore(fake_store), "test")
    classes = ["SR", "AFIB", "CLBBB"]
    avg = random_encoder_controls(model, test, classes, n_inits=2, seed=4, n_boot=5)
    single = [evaluate_model(random_encoder_control(model, 4 + k), test, classes, n_boot=5, seed=4) for k in range(2)]
    for ps in ("clinical", "descriptive"):
        draws = [s[ps]["macro_auroc"] for s in single]
        assert len(set(draws)) > 1  # the inits differ
        assert avg[ps]["macro_draws"] == draws
        assert abs(avg[ps]["macro_auroc"] - float(np.mean(draws))) < 1e-12
        assert avg[ps]["macro_ci"] == [min(draws), max(draws)]
        for c in classes:
            want = np.mean([s[ps]["per_class"][c]["auroc"] for s in single])
            assert abs(avg[ps]["per_class"][c]["auroc"] - want) < 1e-12
