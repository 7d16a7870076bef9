"""MAKE: multi-aspect knowledge-enhanced contrastive learning (MICCAI'25), with the reference code's defects fixed.

Texts of a batch follow **one ordering convention**: rows ``0..B-1`` are the reports (row ``b`` = sample ``b``),
followed by the flat, sample-major list of knowledge texts (for each sample: its ontology/diagnosis text first,
if any, then its aspect sub-captions). ``owner[m]`` is the sample of text ``m`` and ``kind[m]`` is
``0`` (report), ``1`` (ontology) or ``2`` (aspect). Nothing depends on caption-major chunking (defect 1 of the
reference), the local term works without ``--local-loss`` (defect 2), positives are an owner index so any rank
offset is explicit (defect 3), and the fine-grained term pools patches per sub-caption (defect 4).

Loss ``L = λ_m · L_MKCL + λ_s · L_SLRA``:

- ``L_MKCL``: multi-positive InfoNCE between each image and all its texts (core
  :class:`~vlp_core.losses.MultiPositiveClipLoss`), sub-caption weights diagnosis-guided;
- diagnosis-guided weights (detached): for sample ``b`` with ontology text ``o_b`` and sub-captions ``t_k``,
  ``w_k = softmax_k(o_b · t_k) / max_k softmax_k(o_b · t_k)`` (so the most diagnosis-like aspect has weight 1);
  reports, ontology texts and aspects of samples without an ontology text get weight 1;
- ``L_SLRA``: for image ``b`` and sub-caption ``c`` the patch attention ``a_{b,n,c} = (p_{b,n}·t_c)·𝟙[p_{b,n}·t_c ≥ σ]``,
  L2-normalised over patches, pools a local vector ``g_{b,c} = Σ_n â_{b,n,c} p_{b,n}`` (one per image and
  sub-caption); the weighted image→text InfoNCE on ``s · ĝ_{b,c} · t_c`` over aspect texts (reports excluded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.losses import MultiPositiveClipLoss
from vlp_core.towers import TowerOutput
from vlp_medical.reports import split_sentences

__all__ = ["AspectDecomposer", "MakeLoss", "diagnosis_weights", "load_knowledge", "local_pooled_logits"]

Decompose = Callable[[str, Sequence[str]], Sequence[str]]


def load_knowledge(source: str | Path | Mapping[str, Any] = "cxr") -> dict[str, dict[str, Any]]:
    """Load a knowledge table: a shipped name (``"cxr"``, ``"derm"``), a JSON path, or a mapping.

    Each entry ``diagnosis -> {"ontology": str, "visual_concepts": [...], "location": [...], "morphology": [...],
    "keywords": [...], "label": str}`` (``keywords``/``label`` optional; ``{side}``/``{zone}`` placeholders allowed).
    """
    if isinstance(source, Mapping):
        table = dict(source)
    elif isinstance(source, str) and source in ("cxr", "derm"):
        table = json.loads(resources.files("vlp_medical.knowledge").joinpath(f"{source}.json").read_text())
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"knowledge table {str(source)!r}: not a shipped name (cxr, derm) or a JSON file")
        table = json.loads(path.read_text())
    table = {k: v for k, v in table.items() if not k.startswith("_")}
    for name, entry in table.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("ontology"), str):
            raise ValueError(f"knowledge table entry {name!r} needs an 'ontology' string")
    return table


_SIDE = re.compile(r"\b(right|left|bilateral)\b", re.I)
_ZONE = re.compile(r"\b(upper|lower|middle)\b", re.I)


class AspectDecomposer(Configurable):
    """Report + positive diagnoses -> ``{"ontology": str | None, "aspects": [sub-captions]}``.

    Sub-captions: the knowledge-table aspects (visual concepts, location, morphology) of every positive diagnosis,
    with ``{side}``/``{zone}`` filled from the report sentence that mentions it, then the report's own sentences;
    at most ``max_aspects``. An optional ``decompose(report, diagnoses) -> list[str]`` callable (e.g. an LLM)
    replaces the report-sentence part.

    Args:
        knowledge: table name, path or mapping (see :func:`load_knowledge`).
        max_aspects: cap on sub-captions per sample (MAKE uses 8).
        decompose: optional user decomposition callable (not serialised into configs).
    """

    def __init__(
        self, knowledge: str | Mapping[str, Any] = "cxr", max_aspects: int = 8, decompose: Decompose | None = None
    ) -> None:
        self.table = load_knowledge(knowledge)
        self.max_aspects = max_aspects
        self.decompose = decompose
        self.by_label = {e.get("label", k): k for k, e in self.table.items()}

    def diagnoses_from_labels(self, labels: Mapping[str, float]) -> list[str]:
        """Knowledge keys of the positive labels (label names mapped through each entry's ``label``)."""
        return [self.by_label[k] for k, v in labels.items() if k in self.by_label and v == 1]

    def __call__(self, report: str, diagnoses: Sequence[str]) -> dict[str, Any]:
        sentences = split_sentences(report)
        aspects: list[str] = []
        ontology = []
        for d in diagnoses:
            if d not in self.table:
                raise KeyError(f"diagnosis {d!r} is not in the knowledge table ({sorted(self.table)})")
            entry = self.table[d]
            ontology.append(entry["ontology"])
            keys = [k.lower() for k in entry.get("keywords", [d])]
            mention = next((s for s in sentences if any(k in s.lower() for k in keys)), "")
            side = (_SIDE.search(mention) or [None, ""])[1].lower()
            zone = (_ZONE.search(mention) or [None, ""])[1].lower()
            for field in ("visual_concepts", "location", "morphology"):
                for t in entry.get(field, []):
                    if ("{side}" in t and not side) or ("{zone}" in t and not zone):
                        t = t.replace("{side} ", "").replace("{zone} ", "")
                    aspects.append(" ".join(t.format(side=side, zone=zone).split()))
        extra = list(self.decompose(report, diagnoses)) if self.decompose is not None else sentences
        aspects.extend(extra)
        seen: set[str] = set()
        unique = [a for a in aspects if a and not (a in seen or seen.add(a))]
        return {"ontology": "; ".join(ontology) if ontology else None, "aspects": unique[: self.max_aspects]}

    def texts(self, report: str, diagnoses: Sequence[str]) -> list[tuple[str, int]]:
        """Flat ``(text, kind)`` list of one sample: the ontology (kind 1) first, then sub-captions (kind 2)."""
        out = self(report, diagnoses)
        head = [(out["ontology"], 1)] if out["ontology"] else []
        return head + [(a, 2) for a in out["aspects"]]


def diagnosis_weights(texts: Tensor, owner: Tensor, kind: Tensor, temperature: float = 1.0) -> Tensor:
    """Diagnosis-guided weight per text ``[M]`` (detached), see the module docstring.

    Args:
        texts: unit text embeddings ``[M, D]``.
        owner: sample index per text ``[M]``.
        kind: 0 report, 1 ontology, 2 aspect ``[M]`` (at most one ontology text per sample).
        temperature: softmax temperature over a sample's aspects.
    """
    texts = texts.detach()
    w = torch.ones(texts.shape[0], dtype=texts.dtype, device=texts.device)
    onto_idx = torch.nonzero(kind == 1).flatten()
    if onto_idx.numel() == 0:
        return w
    n_owner = int(owner.max()) + 1
    onto_of = torch.full((n_owner,), -1, dtype=torch.long, device=texts.device)
    if torch.unique(owner[onto_idx]).numel() != onto_idx.numel():
        raise ValueError("at most one ontology text (kind 1) per sample")
    onto_of[owner[onto_idx]] = onto_idx
    asp = torch.nonzero((kind == 2) & (onto_of[owner] >= 0)).flatten()
    if asp.numel() == 0:
        return w
    sim = (texts[asp] * texts[onto_of[owner[asp]]]).sum(-1) / temperature
    grp = owner[asp]
    gmax = torch.full((n_owner,), -float("inf"), dtype=sim.dtype, device=sim.device).scatter_reduce(0, grp, sim, "amax")
    e = (sim - gmax[grp]).exp()
    # softmax_k / max_k softmax_k = exp(sim_k - max_k sim): the normaliser cancels.
    w[asp] = e
    return w


def local_pooled_logits(
    patches: Tensor, texts: Tensor, threshold: float = 0.3, patch_mask: Tensor | None = None
) -> Tensor:
    """Similarity of each image's sub-caption-pooled local vector with that sub-caption: ``[B, C]``.

    Args:
        patches: unit patch tokens ``[B, N, D]``.
        texts: unit sub-caption embeddings ``[C, D]``.
        threshold: σ; patches with similarity below it get zero attention.
        patch_mask: ``[B, N]`` valid patches (``None`` = all).

    Returns:
        ``ĝ_{b,c} · t_c`` where ``ĝ`` is the unit pooled vector (0 where no patch passes the threshold).
    """
    sim = torch.einsum("bnd,cd->bnc", patches, texts)
    att = sim * (sim >= threshold).to(sim.dtype)
    if patch_mask is not None:
        att = att * patch_mask[..., None].to(att.dtype)
    att = att / att.norm(dim=1, keepdim=True).clamp_min(1e-6)
    pooled = torch.einsum("bnc,bnd->bcd", att, patches)
    pooled = F.normalize(pooled, dim=-1, eps=1e-6)
    return (pooled * texts[None]).sum(-1)


class MakeLoss(Configurable, nn.Module):
    """MAKE objective on tower outputs (``forward_outputs``), see the module docstring.

    Reads ``outputs[image_key]`` (embedding + patch tokens), ``outputs[report_key]`` (``[B]`` report embeddings)
    and ``outputs[aspects_key]`` (``[M]`` flat knowledge texts) with ``batch[f"{aspects_key}_owner"]`` and
    ``batch[f"{aspects_key}_kind"]``.

    Args:
        lambda_m: weight of the multi-positive term (1.0).
        lambda_s: weight of the fine-grained term (0.7; 0 disables it).
        threshold: σ of the local attention (MAKE 0.3; lower it when training from scratch, where cosine
            similarities start near 0).
        diagnosis_weighting: use the diagnosis-guided weights (else all 1).
        init_logit_scale: initial CLIP scale (shared by both terms).
    """

    def __init__(
        self, lambda_m: float = 1.0, lambda_s: float = 0.7, threshold: float = 0.3, diagnosis_weighting: bool = True,
        init_logit_scale: float = 1 / 0.07, image_key: str = "image", report_key: str = "text",
        aspects_key: str = "aspects",
    ) -> None:  # fmt: skip
        super().__init__()
        self.lambda_m, self.lambda_s, self.threshold = lambda_m, lambda_s, threshold
        self.diagnosis_weighting = diagnosis_weighting
        self.image_key, self.report_key, self.aspects_key = image_key, report_key, aspects_key
        self.contrastive = MultiPositiveClipLoss(init_logit_scale=init_logit_scale)

    def clamp_parameters(self) -> None:
        self.contrastive.clamp_parameters()

    def compute(
        self, image: Tensor, patches: Tensor | None, reports: Tensor, aspects: Tensor, owner: Tensor, kind: Tensor,
        patch_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:  # fmt: skip
        """The loss from raw tensors: ``image [B, D]``, ``patches [B, N, D]``, ``reports [B, D]``, ``aspects [M, D]``."""
        b = image.shape[0]
        if reports.shape[0] != b:
            raise ValueError(f"need one report per image, got {reports.shape[0]} for {b}")
        texts = F.normalize(torch.cat([reports, aspects]), dim=-1)
        all_owner = torch.cat([torch.arange(b, device=owner.device), owner.long()])
        all_kind = torch.cat([torch.zeros(b, dtype=torch.long, device=kind.device), kind.long()])
        w = diagnosis_weights(texts, all_owner, all_kind) if self.diagnosis_weighting else torch.ones_like(texts[:, 0])
        pos = torch.zeros(b, texts.shape[0], dtype=texts.dtype, device=texts.device)
        pos[all_owner, torch.arange(texts.shape[0], device=texts.device)] = w
        out = self.contrastive(image, texts, pos)
        mkcl = out["loss"]
        result = {"mkcl": mkcl.detach(), "logit_scale": out["logit_scale"]}
        loss = self.lambda_m * mkcl
        sub = torch.nonzero(all_kind == 2).flatten()
        if self.lambda_s > 0 and patches is not None and sub.numel() > 0:
            scale = self.contrastive.logit_scale.exp()
            logits = scale * local_pooled_logits(F.normalize(patches, dim=-1), texts[sub], self.threshold, patch_mask)
            pos_s = pos[:, sub]
            slra = -(pos_s * F.log_softmax(logits, dim=1)).sum() / pos_s.sum().clamp_min(1e-12)
            loss = loss + self.lambda_s * slra
            result["slra"] = slra.detach()
        result["loss"] = loss
        return result

    def forward_outputs(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        img = outputs[self.image_key]
        return self.compute(
            img.embedding, img.tokens, outputs[self.report_key].embedding, outputs[self.aspects_key].embedding,
            batch[f"{self.aspects_key}_owner"], batch[f"{self.aspects_key}_kind"], img.mask,
        )  # fmt: skip
