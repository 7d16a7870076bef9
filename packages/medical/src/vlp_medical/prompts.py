"""Zero-shot prompt sets for the chest-radiograph findings of the phantom suite (and CheXpert-named classes).

Two sets, never tuned on test data (and, for each, a candidate pool from which the bench picks one pair per class
on the validation split, :func:`vlp_medical.bench.select_prompts`):

- ``class_names``: the finding's name as a prompt against ``"no <name>"`` (CheXzero-style pair);
- ``disjoint``: descriptions written in lay/alternative wording that never occurs in the phantom reports or in
  the knowledge table (a test checks that no prompt and no three-word sequence of a prompt appears there), against
  one generic negative. It measures transfer beyond the training wording. Two versions: the first draft
  (:data:`DISJOINT_PROMPTS`) and one wording per class chosen once on the validation split from a candidate pool
  (:data:`DISJOINT_CHOSEN`; the test split never took part).
"""

from __future__ import annotations

__all__ = [
    "CLASS_NAMES",
    "CLASS_TEMPLATES",
    "DISJOINT_CHOSEN",
    "DISJOINT_NEGATIVES",
    "DISJOINT_POOL_NEGATIVES",
    "DISJOINT_PROMPTS",
    "DISJOINT_POOL_EXTRA",
    "DISJOINT_PROMPTS_EXTRA",
    "class_name_prompts",
    "disjoint_pool",
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
# More candidates for the validation-selected pool (same rule; tested). Written as lay or alternative clinical
# wording before any of them was scored.
DISJOINT_POOL_EXTRA: dict[str, list[str]] = {
    "cardiomegaly": ["large heart", "heart bigger than it should be", "dilated heart"],
    "effusion": ["water on the lung", "fluid in the chest cavity", "liquid layering at the lung base",
                 "fluid around the lung", "hydrothorax"],
    "pneumothorax": ["collapsed lung", "free air inside the chest", "air trapped between lung and ribs",
                     "lung collapse", "deflated lung"],
    "consolidation": ["pneumonia", "lobar pneumonia", "airless part of a lung", "white out of a lobe"],
    "nodule": ["spot on the lung", "round lesion", "small lung mass", "lump in the lung"],
    "edema": ["congestive heart failure", "fluid filled lungs", "water in both lungs", "lung congestion"],
}  # fmt: skip
DISJOINT_POOL_NEGATIVES: list[str] = [*DISJOINT_NEGATIVES, "healthy lungs and heart", "unremarkable film"]
# The demo's disjoint set: one wording per class chosen ONCE from the pool's positives on the phantom VALIDATION
# split (mean AUROC against "healthy chest film" over four models: CLIP and ProbMed + sentence term, seeds 0 and 1;
# package README "Disjoint wording, chosen on validation"), then frozen for every model and control. The first
# draft (DISJOINT_PROMPTS) stays as a second row: it was written before any score was seen.
DISJOINT_CHOSEN: dict[str, list[str]] = {
    "cardiomegaly": ["oversized heart"],
    "effusion": ["hydrothorax"],
    "pneumothorax": ["punctured lung"],
    "consolidation": ["pneumonia patch"],
    "nodule": ["spot on the lung"],
    "edema": ["lung congestion"],
}
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


def disjoint_prompts(
    classes: list[str] | None = None, ensemble: bool = False, chosen: bool = False
) -> dict[str, dict[str, list[str]]]:
    """Disjoint-wording prompts vs a generic negative: the first draft (default), with ``ensemble`` its extra
    phrasings and negatives too, or with ``chosen`` the validation-chosen wording :data:`DISJOINT_CHOSEN`."""
    classes = classes or list(DISJOINT_PROMPTS)
    if chosen:
        return {c: {"prompts": list(DISJOINT_CHOSEN[c]), "negatives": [DISJOINT_NEGATIVE]} for c in classes}
    if not ensemble:
        return {c: {"prompts": list(DISJOINT_PROMPTS[c]), "negatives": [DISJOINT_NEGATIVE]} for c in classes}
    return {c: {"prompts": [*DISJOINT_PROMPTS[c], *DISJOINT_PROMPTS_EXTRA[c]], "negatives": list(DISJOINT_NEGATIVES)}
            for c in classes}  # fmt: skip


def disjoint_pool(classes: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """Candidate pool of disjoint-wording prompts: the fixed set, its ensemble additions and
    :data:`DISJOINT_POOL_EXTRA`, against every generic negative of :data:`DISJOINT_POOL_NEGATIVES`."""
    classes = classes or list(DISJOINT_PROMPTS)
    return {c: {"prompts": [*DISJOINT_PROMPTS[c], *DISJOINT_PROMPTS_EXTRA[c], *DISJOINT_POOL_EXTRA[c]],
                "negatives": list(DISJOINT_POOL_NEGATIVES)} for c in classes}  # fmt: skip
