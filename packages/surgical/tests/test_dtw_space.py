"""HecVLObjective(dtw_space=...): which embedding space the PeskaVLP DTW terms train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures
from vlp_surgical.training import HecVLObjective, ProcedureCorpus, build_batch


def _grads(model: HecVL, loss: torch.Tensor) -> dict[str, bool]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {
        f"{side}_{level}": any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in proj[level].parameters())
        for side, proj in (("vis", model.vis_proj), ("txt", model.txt_proj))
        for level in HecVL.levels
    }


def test_dtw_terms_train_the_chosen_space_only(tmp_path: Path) -> None:
    root = make_procedures(tmp_path / "p", n_train=2, n_val=0, n_test=0, size=32, phase_seconds=(5.0, 7.0))
    batch = build_batch(ProcedureCorpus(root, "train").items)
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16)

    own = HecVLObjective(dtw_weight=1.0)(model, batch)
    g = _grads(model, own["dtw_video"])
    assert g["vis_video"] and g["txt_video"] and not g["vis_clip"] and not g["vis_phase"]
    g = _grads(model, HecVLObjective(dtw_weight=1.0)(model, batch)["dtw_phase"])
    assert g["vis_phase"] and g["txt_phase"] and not g["vis_clip"] and not g["vis_video"]

    out = HecVLObjective(dtw_weight=1.0, dtw_space="clip")(model, batch)
    for term in ("dtw_video", "dtw_phase"):
        g = _grads(model, HecVLObjective(dtw_weight=1.0, dtw_space="clip")(model, batch)[term])
        assert g["vis_clip"] and g["txt_clip"] and not g["vis_video"] and not g["vis_phase"], term
    # Same frames and texts, another projection: a different value (a silently ignored option would give equal ones).
    assert not torch.isclose(out["dtw_video"], own["dtw_video"])
    # The space choice changes nothing but the DTW terms.
    torch.testing.assert_close(out["clip"], own["clip"])
    torch.testing.assert_close(out["phase"], own["phase"])


def test_dtw_space_is_validated() -> None:
    with pytest.raises(ValueError, match="dtw_space"):
        HecVLObjective(dtw_space="frame")
