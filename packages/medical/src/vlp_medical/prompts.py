"""Zero-shot prompt sets for the chest-radiograph findings of the phantom suite (and CheXpert-named classes).

Two sets, never tuned on test data:

- ``class_names``: the finding's name as a prompt against ``"no <name>"`` (CheXzero-style pair);
- ``disjoint``: descriptions written in lay/alternative wording that never occurs in the phantom reports or in
  the knowledge table (a test checks that no prompt and no three-word sequence of a prompt appears there), against
  one generic negative. It measures transfer beyond the training wording.
"""

from __future__ import annotations

__all__ = ["CLASS_NAMES", "DISJOINT_PROMPTS", "class_name_prompts", "disjoint_prompts"]

CLASS_NAMES: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "nodule": "lung nodule",
    "edema": "pulmonary edema",
}

DISJOINT_PROMPTS: dict[str, list[str]] = {
    "cardiomegaly": ["big heart shadow", "oversized heart"],
    "effusion": ["liquid pooling at the chest base", "water around the lung"],
    "pneumothorax": ["collapsed lung with air around it", "air leak outside the lung"],
    "consolidation": ["dense white patch filling part of a lung", "pneumonia patch"],
    "nodule": ["small round spot in a lung", "coin lesion"],
    "edema": ["fluid overload in both lungs", "wet congested lungs"],
}
DISJOINT_NEGATIVE = "healthy chest film"


def class_name_prompts(classes: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    classes = classes or list(CLASS_NAMES)
    return {c: {"prompts": [CLASS_NAMES[c]], "negatives": [f"no {CLASS_NAMES[c]}"]} for c in classes}


def disjoint_prompts(classes: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    classes = classes or list(DISJOINT_PROMPTS)
    return {c: {"prompts": list(DISJOINT_PROMPTS[c]), "negatives": [DISJOINT_NEGATIVE]} for c in classes}
