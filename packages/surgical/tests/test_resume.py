"""`pretrain` checkpoints and resumes exactly: stop + resume == one uninterrupted run (weights, history, bank)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures
from vlp_surgical.training import HecVLObjective, ProcedureCorpus, pretrain


def _setup(text=None):
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16, text_tower=text)
    # Every stateful part: DTW negatives, views, pair shuffling off but seeded, the bank refreshed at steps 0 and 3.
    objective = HecVLObjective(dtw_weight=1.0, ssl_weight=0.1, ssl_max_clips=4, retrieval_weight=0.5,
                               refresh_every=3, seed=0)  # fmt: skip
    return model, objective


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    root = make_procedures(tmp_path / "p", n_train=3, n_val=0, n_test=0, size=32, phase_seconds=(2.0, 3.0),
                           silent_fraction=0.4)  # fmt: skip
    corpus = ProcedureCorpus(root, "train")
    kw = {"steps": 5, "videos_per_batch": 2, "seed": 0}
    model, objective = _setup()
    full = pretrain(model, corpus, objective, **kw)

    ckpt = tmp_path / "run" / "state.pt"
    m1, o1 = _setup(model.text)
    first = pretrain(m1, corpus, o1, checkpoint=ckpt, checkpoint_every=1, stop_after=2, **kw)
    assert len(first) == 2 and ckpt.is_file()
    m2, o2 = _setup(model.text)  # a fresh process: new model, objective, generators
    resumed = pretrain(m2, corpus, o2, checkpoint=ckpt, resume=True, **kw)
    assert len(resumed) == 5
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in full], rel=1e-6, abs=1e-7)
    for (k, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(o2.bank.bank, objective.bank.bank, rtol=1e-5, atol=1e-6)
    # Without resume the same call starts over (and differs from the continued run after step 2).
    m3, o3 = _setup(model.text)
    again = pretrain(m3, corpus, o3, checkpoint=ckpt, stop_after=2, **kw)
    assert [h["loss"] for h in again] == pytest.approx([h["loss"] for h in full[:2]], rel=1e-6, abs=1e-7)
    m4, o4 = _setup(model.text)
    with pytest.raises(ValueError, match="written for steps=5"):
        pretrain(m4, corpus, o4, checkpoint=ckpt, resume=True, steps=7, videos_per_batch=2)
