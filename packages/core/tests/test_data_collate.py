"""collate_batch: nested dicts, ragged first dimensions with masks, text lists with owner index, skipped samples."""

from __future__ import annotations

import pytest
import torch

from vlp_core.data import collate_batch


def test_ragged_clips_are_padded_with_a_mask() -> None:
    clips = [torch.randn(t, 3, 4, 4) for t in (2, 5, 3)]
    batch = collate_batch([{"clip": c} for c in clips])
    assert batch["clip"].shape == (3, 5, 3, 4, 4)
    assert batch["clip_mask"].tolist() == [[True] * 2 + [False] * 3, [True] * 5, [True] * 3 + [False] * 2]
    for i, c in enumerate(clips):
        torch.testing.assert_close(batch["clip"][i, : c.shape[0]], c)
        assert batch["clip"][i, c.shape[0] :].abs().sum() == 0


def test_equal_shapes_are_stacked_without_mask() -> None:
    batch = collate_batch([{"x": torch.ones(2, 3)}, {"x": torch.zeros(2, 3)}])
    assert batch["x"].shape == (2, 2, 3) and "x_mask" not in batch


def test_shapes_differing_beyond_first_dim_are_refused() -> None:
    with pytest.raises(ValueError, match="beyond the first dimension"):
        collate_batch([{"img": torch.zeros(3, 8, 8)}, {"img": torch.zeros(3, 8, 9)}])


def test_text_lists_become_flat_list_and_owner_index() -> None:
    samples = [{"aspects": ["a", "b"], "report": "r0"}, {"aspects": ["c"], "report": "r1"},
               {"aspects": ["d", "e", "f"], "report": "r2"}]  # fmt: skip
    batch = collate_batch(samples)
    assert batch["aspects"] == ["a", "b", "c", "d", "e", "f"]
    assert batch["aspects_owner"].tolist() == [0, 0, 1, 2, 2, 2]
    ids = batch["aspects_ids"]
    assert ids.shape == (6,) and len(set(ids.tolist())) == 6
    again = collate_batch([{"aspects": ["f", "a"]}])["aspects_ids"]  # same text, same id, in any batch
    assert again.tolist() == [ids[5].item(), ids[0].item()]
    assert batch["report"] == ["r0", "r1", "r2"]


def test_nested_dicts_and_skipped_samples() -> None:
    samples = [
        {"ecg": {"signal": torch.ones(2, 10), "rpeaks": torch.tensor([1, 2])}, "y": 1},
        None,  # a bad record skipped under skip_bad
        {"ecg": {"signal": torch.zeros(2, 10), "rpeaks": torch.tensor([3])}, "y": 0},
    ]
    batch = collate_batch(samples)
    assert batch["ecg"]["signal"].shape == (2, 2, 10)
    assert batch["ecg"]["rpeaks"].tolist() == [[1, 2], [3, 0]]
    assert batch["ecg"]["rpeaks_mask"].tolist() == [[True, True], [True, False]]
    assert batch["y"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="every sample was skipped"):
        collate_batch([None, None])


def test_mismatched_keys_are_named() -> None:
    with pytest.raises(KeyError, match="sample 1"):
        collate_batch([{"a": 1, "b": 2}, {"a": 1}])
