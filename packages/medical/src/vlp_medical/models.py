"""Image towers, the medical pretrainer (CLIP / MAKE / ProbMed variants) and N-modality probabilistic binding."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vlp_core.config import Configurable, from_config
from vlp_core.losses import ClipLoss, MultiPositiveClipLoss
from vlp_core.similarity import CosineSimilarity
from vlp_core.towers import ImageTower, TextTower, TowerOutput
from vlp_core.training import LossTerm, Pretrainer
from vlp_medical.make import MakeLoss
from vlp_medical.prob import (
    CSDSimilarity,
    HellingerInfoNCE,
    HellingerSimilarity,
    PCMEppLoss,
    ProbabilisticTower,
    SampledInstanceLoss,
    UncertaintyAttenuationLoss,
    VIBLoss,
)

__all__ = [
    "BindingLoss",
    "CosineSimilarity",
    "MedicalPretrainer",
    "METHODS",
    "build_binding_model",
    "build_model",
    "cxr_cnn_small_input",
    "cxr_vit_small_input",
    "cxr_vit_tiny",
    "derm_vit_tiny",
]

METHODS = ("clip", "make", "probmed", "pcmepp")


def cxr_vit_tiny(embed_dim: int = 256, img_size: int = 224, pretrained_path: str | None = None) -> ImageTower:
    """ViT-tiny/16 on single-channel radiographs ``[B, 1, H, W]`` (grey images are never tiled to RGB)."""
    return ImageTower(
        "vit_tiny_patch16_224", embed_dim=embed_dim, in_chans=1, img_size=img_size, pretrained_path=pretrained_path
    )


def derm_vit_tiny(embed_dim: int = 256, img_size: int = 224, pretrained_path: str | None = None) -> ImageTower:
    """ViT-tiny/16 on RGB dermatology photographs ``[B, 3, H, W]``."""
    return ImageTower(
        "vit_tiny_patch16_224", embed_dim=embed_dim, in_chans=3, img_size=img_size, pretrained_path=pretrained_path
    )


def cxr_vit_small_input(embed_dim: int = 128, img_size: int = 64, patch_size: int = 8, depth: int = 4) -> ImageTower:
    """A shallow ViT-tiny (width 192) for low-resolution radiographs: ``(img_size / patch_size)²`` patch tokens.

    The CPU demo preset (64 px, 8 px patches, 4 blocks); random initialisation.
    """
    return ImageTower("vit_tiny_patch16_224", embed_dim=embed_dim, in_chans=1, img_size=img_size,
                      patch_size=patch_size, depth=depth)  # fmt: skip


def cxr_cnn_small_input(embed_dim: int = 128, model_name: str = "resnet10t") -> ImageTower:
    """A small timm CNN on single-channel radiographs ``[B, 1, H, W]`` (random initialisation).

    The CPU demo default: at 64 px and 100-200 steps from scratch a ResNet learns the phantoms' findings where a
    ViT of the same cost does not (its linear probe stays near 0.6; see the package README). Tokens for MAKE's
    local term are the final feature-map positions (``(H / 32)²``).
    """
    return ImageTower(model_name, embed_dim=embed_dim, in_chans=1)


SIMILARITIES: dict[str, type[nn.Module]] = {"cosine": CosineSimilarity, "hellinger": HellingerSimilarity,
                                            "csd": CSDSimilarity}  # fmt: skip


class MedicalPretrainer(Pretrainer):
    """Core :class:`~vlp_core.training.Pretrainer` plus the medical conventions.

    - Extra text fields (MAKE's flat ``"aspects"``) go through the ``"text"`` tower by core's ``inputs=`` routing
      (``inputs={"image": "image", "text": "text", "aspects": "text"}``: one set of weights, one cache; outputs
      keyed by field). A routed text field that is an empty list in a batch (no sample had a sub-caption) gets an
      empty ``[0, E]`` output instead of failing in the text tower.
    - ``similarity``: how embeddings are compared at evaluation (cosine, or Hellinger for probabilistic towers);
      saved with the checkpoint so ``vlp-medical bench`` scores every model the way it was trained.

    Args:
        towers: at least ``"image"`` and ``"text"``.
        losses: weighted loss terms.
        similarity: evaluation similarity: ``"cosine"`` (default), ``"hellinger"`` or ``"csd"`` (``-CSD``) for
            probabilistic ``[mu, logvar]`` embeddings.
        inputs: core's batch field -> tower routing (default: each tower reads its own field).
        text_fields: deprecated spelling of ``inputs`` kept so checkpoints written before 0.2 load: each field is
            routed to the ``"text"`` tower (``None`` = not given).
        **kwargs: forwarded to :class:`~vlp_core.training.Pretrainer` (lr, weight_decay, warmup_steps...).
    """

    def __init__(
        self,
        towers: dict[str, nn.Module],
        losses: list[LossTerm],
        similarity: str = "cosine",
        inputs: dict[str, str] | None = None,
        text_fields: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {sorted(SIMILARITIES)}, got {similarity!r}")
        if text_fields:  # pre-0.2 checkpoints: text_fields=("aspects",) meant inputs["aspects"] = "text"
            inputs = {**(inputs or {name: name for name in towers}), **{f: "text" for f in text_fields}}
        super().__init__(towers, losses, inputs=inputs, **kwargs)
        self.similarity = SIMILARITIES[similarity]()

    @property
    def text_fields(self) -> tuple[str, ...]:
        """Batch fields other than ``"text"`` routed to the ``"text"`` tower (read-only view of ``inputs``)."""
        return tuple(f for f, t in self.inputs.items() if t == "text" and f != "text")

    def forward(self, batch: Mapping[str, Any]) -> dict[str, TowerOutput]:
        empty = [f for f in self.inputs if isinstance(batch.get(f), (list, tuple)) and len(batch[f]) == 0]
        outputs = super().forward({k: v for k, v in batch.items() if k not in empty})
        if empty:
            ref = next(iter(outputs.values())).embedding
            for f in empty:
                outputs[f] = TowerOutput(ref.new_zeros(0, self.towers[self.inputs[f]].output_dim))
        return outputs

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """Image embeddings ``[B, E]`` (``E = 2D`` ``[mu, logvar]`` for probabilistic towers)."""
        return self.towers["image"](images).embedding

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Text embeddings ``[T, E]``."""
        return self.towers["text"](list(texts)).embedding

    @property
    def probabilistic(self) -> bool:
        return isinstance(self.towers["image"], ProbabilisticTower)


def build_model(
    method: str = "clip",
    embed_dim: int = 128,
    image_tower: Mapping[str, Any] | None = None,
    text_max_length: int = 96,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 20,
    max_steps: int | None = None,
    make_threshold: float = 0.1,
    make_lambda_s: float = 0.7,
    sis_weight: float = 0.1,
    vib_weight: float = 1e-3,
    attenuation_weight: float = 0.0,
    attenuation_partners: str = "pair",
    sentence_weight: float = 0.0,
    **kwargs: Any,
) -> MedicalPretrainer:
    """One of the package's methods on a ViT image tower and the frozen packaged text encoder + trained projection.

    Args:
        method: ``"clip"`` (InfoNCE), ``"make"`` (multi-aspect knowledge), ``"probmed"`` (Gaussian embeddings,
            Hellinger InfoNCE + sampled-instance + VIB) or ``"pcmepp"`` (Gaussian embeddings, PCME++ loss).
        embed_dim: shared embedding width D.
        image_tower: ``{"arch": "vit", **kwargs of cxr_vit_small_input}`` (the default: the 64 px ViT preset),
            ``{"arch": <timm CNN name>}`` for :func:`cxr_cnn_small_input` (e.g. ``"resnet10t"``, the demo's), or
            ``{"class_path": ..., "init_args": ...}`` for any tower.
        text_max_length: text truncation (tokens).
        lr: peak learning rate.
        weight_decay: AdamW decay.
        warmup_steps: linear warm-up.
        max_steps: schedule length (``None`` = the trainer's estimate).
        make_threshold: σ of MAKE's local attention (low when training from scratch).
        make_lambda_s: weight of MAKE's fine-grained term.
        sis_weight: weight of ProbMed's sampled-instance loss (per modality).
        vib_weight: weight of the VIB term.
        attenuation_weight: ProbMed only: weight of :class:`~vlp_medical.prob.UncertaintyAttenuationLoss` (variance
            that follows each item's matching difficulty; 0 = off).
        attenuation_partners: what counts as a match in that difficulty: ``"pair"`` (its own report only) or
            ``"labels"`` (any item of the batch with the same finding labels, the batch's ``"labels"``).
        sentence_weight: CLIP and ProbMed: weight of a sentence-level term, a multi-positive InfoNCE (core
            :class:`~vlp_core.losses.MultiPositiveClipLoss`, in the method's similarity) between each image and the
            single sentences of its own report, passed as the batch's ``"aspects"`` (``CxrTextDataset(texts=
            report_sentences)``); identical sentences of other reports count as positives (``aspects_ids``).
            Short sentences are what zero-shot prompts look like; 0 = off.
        **kwargs: forwarded to :class:`MedicalPretrainer` (e.g. ``lr_multipliers={"towers.text.encoder": 0.05}``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if attenuation_partners not in ("pair", "labels"):
        raise ValueError(f"attenuation_partners must be 'pair' or 'labels', got {attenuation_partners!r}")
    spec = dict(image_tower or {})
    if "class_path" in spec:
        image: nn.Module = from_config(spec)
    elif spec.get("arch", "vit") == "vit":
        spec.pop("arch", None)
        image = cxr_vit_small_input(embed_dim=embed_dim, **spec)
    else:
        unknown = set(spec) - {"arch", "img_size"}  # a CNN takes any input size
        if unknown:
            raise ValueError(f"image_tower options {sorted(unknown)} apply to the ViT only (arch={spec['arch']!r})")
        image = cxr_cnn_small_input(embed_dim=embed_dim, model_name=spec["arch"])
    text: nn.Module = TextTower(embed_dim=embed_dim, max_length=text_max_length, freeze=True)
    similarity = "cosine"
    if method == "clip":
        losses = [LossTerm("clip", ClipLoss(), inputs=("image", "text"))]
    elif method == "make":
        losses = [LossTerm("make", MakeLoss(threshold=make_threshold, lambda_s=make_lambda_s))]
    else:
        image, text = ProbabilisticTower(image), ProbabilisticTower(text)
        similarity = "hellinger"
        main = LossTerm("hellinger", HellingerInfoNCE(), inputs=("image", "text")) if method == "probmed" else \
            LossTerm("pcmepp", PCMEppLoss(beta=0.0), inputs=("image", "text"))  # fmt: skip
        losses = [
            main,
            LossTerm("sis_image", SampledInstanceLoss(), weight=sis_weight, inputs=("image",)),
            LossTerm("sis_text", SampledInstanceLoss(), weight=sis_weight, inputs=("text",)),
            LossTerm("vib", VIBLoss(), weight=vib_weight, inputs=("image", "text")),
        ]
        if method == "probmed" and attenuation_weight > 0:
            inputs: Any = ("image", "text")
            if attenuation_partners == "labels":
                inputs = {"a": "image", "b": "text", "labels": "batch:labels"}
            losses.append(LossTerm("attenuation", UncertaintyAttenuationLoss(), weight=attenuation_weight,
                                   inputs=inputs))  # fmt: skip
    if sentence_weight > 0:
        if method not in ("clip", "probmed"):
            raise ValueError(f"sentence_weight applies to 'clip' and 'probmed', not {method!r}")
        sentences = MultiPositiveClipLoss() if method == "clip" else \
            MultiPositiveClipLoss(init_logit_scale=20.0, similarity=HellingerSimilarity())  # fmt: skip
        losses.append(LossTerm("sentences", sentences, weight=sentence_weight,
                               inputs={"a": "image", "b": "aspects", "pos": "batch:aspects_owner",
                                       "ids": "batch:aspects_ids"}))  # fmt: skip
    routed = {"aspects": "text"} if method == "make" or sentence_weight > 0 else {}
    return MedicalPretrainer({"image": image, "text": text}, losses, similarity=similarity,
                             inputs={"image": "image", "text": "text", **routed},
                             lr=lr,
                             weight_decay=weight_decay, warmup_steps=warmup_steps, max_steps=max_steps, **kwargs)  # fmt: skip


class BindingLoss(Configurable, nn.Module):
    """Bind N modalities in one space by sampling modality pairs per step (ProbMed-style).

    At each call the modalities present in the batch's tower outputs are paired (all unordered pairs), and
    ``pairs_per_step`` of them are drawn with a generator seeded by ``(seed, call index)`` (deterministic; all
    pairs when fewer are available). The pair losses share one contrastive loss module (and temperature) and are
    averaged. Modalities absent from a batch (a dataset holding only some of them) are simply not paired.

    Args:
        modalities: tower names that may be bound.
        pairs_per_step: pairs per step (``None`` = all available pairs).
        probabilistic: Hellinger InfoNCE on ``[mu, logvar]`` embeddings (else CLIP InfoNCE).
        seed: pair-sampling seed.
    """

    def __init__(
        self, modalities: Sequence[str], pairs_per_step: int | None = 1, probabilistic: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"binding needs at least two modalities, got {list(modalities)}")
        self.modalities = list(modalities)
        self.pairs_per_step, self.seed = pairs_per_step, seed
        self.contrastive: nn.Module = HellingerInfoNCE() if probabilistic else ClipLoss()
        self.calls = 0
        self.last_pairs: list[tuple[str, str]] = []

    def clamp_parameters(self) -> None:
        self.contrastive.clamp_parameters()

    def forward_outputs(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        present = [m for m in self.modalities if m in outputs]
        pairs = list(itertools.combinations(present, 2))
        if not pairs:
            raise KeyError(f"binding needs two of {self.modalities} in the batch; towers run: {sorted(outputs)}")
        k = len(pairs) if self.pairs_per_step is None else min(self.pairs_per_step, len(pairs))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        chosen = [pairs[int(i)] for i in torch.randperm(len(pairs), generator=g)[:k]]
        self.last_pairs = chosen
        losses = [self.contrastive(outputs[a].embedding, outputs[b].embedding)["loss"] for a, b in chosen]
        return {"loss": torch.stack(losses).mean(), "pairs": torch.tensor(float(k))}


def build_binding_model(
    towers: Mapping[str, tuple[str, Mapping[str, Any]]],
    registry: Any = None,
    probabilistic: bool = True,
    pairs_per_step: int | None = 1,
    seed: int = 0,
    vib_weight: float = 1e-3,
    attenuation_weight: float = 0.0,
    sentence_weight: float = 0.0,
    **kwargs: Any,
) -> MedicalPretrainer:
    """A model binding any registered towers: ``{"cxr": ("medical/cxr_vit_tiny", {...}), "ecg": ("ecg/resnet1d",
    {...}), "text": ("core/text", {...})}``. Towers are built by name from the plug-in registry (never imported
    from another domain package); each is wrapped in a :class:`~vlp_medical.prob.ProbabilisticTower` when
    ``probabilistic``.

    Args:
        towers: modality name -> (registered tower name, constructor kwargs).
        registry: a :class:`~vlp_core.registry.PluginRegistry` (default: the global one, plug-ins loaded).
        probabilistic: Gaussian embeddings and Hellinger InfoNCE (else CLIP).
        pairs_per_step: modality pairs drawn per step.
        seed: pair-sampling seed.
        vib_weight: VIB weight (probabilistic only).
        **kwargs: forwarded to :class:`MedicalPretrainer`.
    """
    if registry is None:
        from vlp_core.plugins import load_plugins
        from vlp_core.registry import PluginRegistry

        load_plugins(strict=False)
        registry = PluginRegistry()
    built: dict[str, nn.Module] = {}
    for name, (key, init) in towers.items():
        tower = registry.towers.build(key, **dict(init))
        built[name] = ProbabilisticTower(tower) if probabilistic else tower
    losses = [LossTerm("bind", BindingLoss(list(built), pairs_per_step, probabilistic, seed))]
    if probabilistic and vib_weight > 0:
        losses.append(_PresentVIB.term(list(built), vib_weight))
    similarity = "hellinger" if probabilistic else "cosine"
    return MedicalPretrainer(built, losses, similarity=similarity, **kwargs)


class _PresentVIB(Configurable, nn.Module):
    """VIB over whichever of ``modalities`` ran on this batch."""

    def __init__(self, modalities: Sequence[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.vib = VIBLoss()

    @classmethod
    def term(cls, modalities: Sequence[str], weight: float) -> LossTerm:
        return LossTerm("vib", cls(modalities), weight=weight)

    def forward_outputs(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> Tensor:
        return self.vib(*[outputs[m].embedding for m in self.modalities if m in outputs])
