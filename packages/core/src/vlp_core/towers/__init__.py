"""Encoders ("towers") with one output type: global embedding plus optional local tokens."""

from __future__ import annotations

from vlp_core.towers.base import ProjectionHead, Tower, TowerOutput, masked_mean
from vlp_core.towers.image import ImageTower, load_state_dict_file
from vlp_core.towers.pooling import AttentionalPooler
from vlp_core.towers.text import TextTower, default_text_model_path

__all__ = [
    "AttentionalPooler",
    "ImageTower",
    "ProjectionHead",
    "TextTower",
    "Tower",
    "TowerOutput",
    "default_text_model_path",
    "load_state_dict_file",
    "masked_mean",
]
