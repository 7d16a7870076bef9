"""Zero-shot prompt sets for the chest-radiograph findings of the phantom suite (and CheXpert-named classes).

Two sets, never tuned on test data:

- ``class_names``: the finding's name as a prompt against ``"no <name>"`` (CheXzero-style pair);
- ``disjoint``: descriptions written in lay/alternative wording that never occurs in the phantom reports or in
  the knowledge table (a test checks that no prompt and no three-word sequence of a prompt appears there), against
  one generic negative. It measures transfer beyond the training wording.
"""

from __future__ import annotations

__all__ = [
    "CLASS_NAMES",
    "CLASS_TEMPLATES",
    "DISJOINT_NEGATIVES",
    "DISJOINT_PROMPTS",
    "DISJOINT_PROMPTS_EXTRA",
    "class_name_prompts",
    "disjoint_prompts",
]

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
# Ensemble additions (same rule: no wording shared with reports or knowledge; tested).
DISJOINT_PROMPTS_EXTRA: dict[str, list[str]] = {
    "cardiomegaly": ["heart looks too large", "swollen heart outline"],
    "effusion": ["fluid collecting beneath a lung", "wet lung base"],
    "pneumothorax": ["punctured lung", "trapped air squeezing a lung"],
    "consolidation": ["solid white area within a lung", "lung infection shadow"],
    "nodule": ["tiny round lump on a lung", "single dot on a lung"],
    "edema": ["waterlogged lungs", "heart failure lungs"],
}
DISJOINT_NEGATIVES: list[str] = [DISJOINT_NEGATIVE, "clean chest picture", "nothing wrong on this film"]
# Class-name ensemble: generic templates around the class name (positive, negative).
CLASS_TEMPLATES: list[tuple[str, str]] = [("{}", "no {}"), ("{} is seen", "no {} is seen"),
                                          ("there is {}", "there is no {}")]  # fmt: skip


def class_name_prompts(classes: list[str] | None = None, ensemble: bool = False) -> dict[str, dict[str, list[str]]]:
    """``{class: {"prompts": [...], "negatives": [...]}}``: the class name vs ``"no <name>"``; with ``ensemble``
    every :data:`CLASS_TEMPLATES` phrasing of both."""
    classes = classes or list(CLASS_NAMES)
    templates = CLASS_TEMPLATES if ensemble else CLASS_TEMPLATES[:1]
    return {c: {"prompts": [p.format(CLASS_NAMES[c]) for p, _ in templates],
                "negatives": [n.format(CLASS_NAMES[c]) for _, n in templates]} for c in classes}  # fmt: skip


def disjoint_prompts(classes: list[str] | None = None, ensemble: bool = False) -> dict[str, dict[str, list[str]]]:
    """Disjoint-wording prompts vs a generic negative; with ``ensemble`` the extra phrasings and negatives too."""
    classes = classes or list(DISJOINT_PROMPTS)
    if not ensemble:
        return {c: {"prompts": list(DISJOINT_PROMPTS[c]), "negatives": [DISJOINT_NEGATIVE]} for c in classes}
    return {c: {"prompts": [*DISJOINT_PROMPTS[c], *DISJOINT_PROMPTS_EXTRA[c]], "negatives": list(DISJOINT_NEGATIVES)}
            for c in classes}  # fmt: skip
