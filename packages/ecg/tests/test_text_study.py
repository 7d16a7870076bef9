"""The descriptive-prompt study trains what it says (last MiniLM blocks only, at the scaled LR) and is scored on the
validation fold, never the test fold."""

from __future__ import annotations

import torch


def _block(model, i: int) -> dict[str, torch.Tensor]:
    layers = model.towers["text"].encoder.encoder.layer
    return {k: v.detach().clone() for k, v in layers[i].state_dict().items()}


def test_unfreezing_trains_only_the_last_block_at_scaled_lr(fake_store) -> None:
    from vlp_ecg.demo import demo_model, train_demo_model

    fresh = demo_model(text_unfreeze_last_n=1)
    groups = fresh.configure_optimizers()["optimizer"].param_groups
    text_lrs = {g["initial_lr"] for g in groups if any(n.startswith("towers.text.encoder") for n in g["names"])}
    assert text_lrs == {2e-3 * 0.05}  # peak LR (the scheduler scales "lr" during warm-up)
    trained = train_demo_model(fake_store, batch_size=16, max_steps=3, progress=False, text_unfreeze_last_n=1)
    first, last = _block(fresh, 0), _block(fresh, -1)
    assert all(torch.equal(v, _block(trained, 0)[k]) for k, v in first.items())  # frozen block unchanged
    assert any(not torch.equal(v, _block(trained, -1)[k]) for k, v in last.items())  # trained block moved
    # The demo default trains no MiniLM weight at all.
    assert not any(p.requires_grad for p in demo_model().towers["text"].encoder.parameters())


def test_text_study_scores_on_the_validation_fold(fake_store, monkeypatch) -> None:
    import vlp_ecg.eval as ev
    from vlp_ecg.demo import run_text_study

    seen: list[tuple[set[str], tuple[str, ...]]] = []
    real = ev.evaluate_model

    def spy(model, dataset, classes, prompt_sets=("clinical", "descriptive"), **kw):
        seen.append((set(dataset.frame["split"]), tuple(prompt_sets)))
        return real(model, dataset, classes, prompt_sets=prompt_sets, **kw)

    monkeypatch.setattr(ev, "evaluate_model", spy)
    variants = {"frozen": {"text_unfreeze_last_n": 0}, "longer": {"text_unfreeze_last_n": 0, "steps": 2.0}}
    rows = run_text_study(fake_store, max_steps=2, batch_size=16, n_boot=0, variants=variants)
    assert seen == [({"val"}, ("clinical", "descriptive", "descriptive_ensemble"))] * 2
    assert [r["steps"] for r in rows] == [2] * 3 + [4] * 3
    assert {r["evaluation"] for r in rows} == {f"zero-shot, {p} prompts" for p in seen[0][1]}
    assert all("fold 9 (validation)" in r["note"] for r in rows)
