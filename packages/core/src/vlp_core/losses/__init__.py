"""Contrastive losses (open_clip-exact, distributed-aware) and their building blocks.

Every loss returns a dict with a scalar ``"loss"`` plus detached scalars to log, and owns its temperature
(``logit_scale``, a ``[1]`` parameter) which the Pretrainer clamps after each step via ``clamp_parameters()``.
"""

from __future__ import annotations

from vlp_core.losses.caption import CaptionDecoder, CaptionLoss, caption_loss
from vlp_core.losses.clip import ClipLoss, MultiPositiveClipLoss, SigLipLoss
from vlp_core.losses.distributed import dist_info, gather_features, gather_variable, global_mean
from vlp_core.losses.functional import (
    chunked_cross_entropy,
    chunked_sigmoid_loss,
    chunked_symmetric_cross_entropy,
    normalize,
)
from vlp_core.losses.local import LocalAlignmentLoss, local_alignment_scores

__all__ = [
    "CaptionDecoder",
    "CaptionLoss",
    "ClipLoss",
    "LocalAlignmentLoss",
    "MultiPositiveClipLoss",
    "SigLipLoss",
    "caption_loss",
    "chunked_cross_entropy",
    "chunked_sigmoid_loss",
    "chunked_symmetric_cross_entropy",
    "dist_info",
    "gather_features",
    "gather_variable",
    "global_mean",
    "local_alignment_scores",
    "normalize",
]
