"""The Lightning pretrainer: a dict of named towers, batch fields routed to them, and weighted loss terms.

The trainer owns the loop; this module owns the math. A domain adds towers and losses through configuration, not
by subclassing: ``Pretrainer(towers={"ecg": ..., "text": TextTower()}, losses=[LossTerm("clip", ClipLoss(),
inputs=("ecg", "text"))])``. Several batch fields can share one tower: ``inputs={"report": "text", "aspects":
"text", "image": "image"}`` encodes both text fields with the same weights (and cache); outputs are keyed by field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlp_core.config import to_config
from vlp_core.towers.base import TowerOutput
from vlp_core.training.base import CONFIG_NAME, WEIGHTS_NAME, VlpModule
from vlp_core.training.schedule import WarmupCosine, param_groups
from vlp_core.training.terms import ALL_OUTPUTS, LossTerm

__all__ = ["Pretrainer", "WEIGHTS_NAME", "CONFIG_NAME"]


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
        if isinstance(value, (list, tuple)):
            return len(value)
    return 1


class Pretrainer(VlpModule):
    """Multi-tower contrastive (and beyond) pretraining.

    Sharing (``save_pretrained`` / ``from_pretrained``) and exact resume come from
    :class:`~vlp_core.training.base.VlpModule`.

    Args:
        towers: name → tower; a tower returns a :class:`~vlp_core.towers.TowerOutput`.
        losses: weighted terms; the total loss is ``Σ weight · term`` over the terms that apply to the batch.
        inputs: batch field → tower name (default: each tower reads the field of its own name). Fields absent from
            a batch are not encoded. Outputs, and the selectors of the loss terms, are keyed by field.
        lr: peak AdamW learning rate.
        weight_decay: AdamW decay (never applied to norms, biases, 1-D tensors or temperatures).
        betas: AdamW betas (open_clip uses (0.9, 0.98) for ViTs).
        eps: AdamW epsilon.
        warmup_steps: linear warm-up steps.
        max_steps: schedule length; ``None`` = the trainer's estimate of the total optimiser steps.
        min_lr_ratio: final LR as a fraction of ``lr``.
        gradient_checkpointing: enable activation checkpointing in every tower that supports it.
        lr_multipliers: per-prefix LR factors, e.g. ``{"towers.text": 0.1}``.
        check_finite_every: check every loss term for NaN/Inf every this many training steps (and on every
            evaluation step), raising an error that names the term. Each check is a host sync on accelerators,
            hence not every step by default; 0 disables it.
    """

    def __init__(
        self,
        towers: dict[str, nn.Module],
        losses: list[LossTerm],
        inputs: dict[str, str] | None = None,
        lr: float = 5e-4,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        max_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        lr_multipliers: dict[str, float] | None = None,
        check_finite_every: int = 25,
    ) -> None:
        super().__init__()
        if not towers:
            raise ValueError("Pretrainer needs at least one tower")
        if not losses:
            raise ValueError("Pretrainer needs at least one loss term")
        names = [t.name for t in losses]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        self.towers = nn.ModuleDict(towers)
        self.losses = nn.ModuleList(losses)
        self.inputs = dict(inputs) if inputs is not None else {name: name for name in towers}
        unknown = {f: t for f, t in self.inputs.items() if t not in self.towers}
        if unknown:
            raise KeyError(f"inputs route fields to unknown towers {unknown}; towers are {sorted(self.towers)}")
        self._configure_tower_outputs()
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, tuple(betas), eps
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio
        self.lr_multipliers = dict(lr_multipliers or {})
        self.gradient_checkpointing = gradient_checkpointing
        self.check_finite_every = check_finite_every
        if gradient_checkpointing:
            for tower in self.towers.values():
                if hasattr(tower, "set_gradient_checkpointing"):
                    tower.set_gradient_checkpointing(True)
        # Modules are described by their own configs; only plain settings go into Lightning's hparams.
        self.save_hyperparameters(ignore=["towers", "losses"])

    def _configure_tower_outputs(self) -> None:
        """Tell each tower which outputs some loss term reads, so it builds nothing that would get no gradient
        (plain DDP, without ``find_unused_parameters``, fails on parameters that take no part in the loss)."""
        needs: dict[str, set[str]] = {name: set() for name in self.towers}
        for term in self.losses:
            for field, attrs in term.needs().items():
                targets = set(self.towers) if field == ALL_OUTPUTS else {self.inputs.get(field, field)}
                for tower in targets & set(needs):
                    needs[tower] |= {ALL_OUTPUTS} if field == ALL_OUTPUTS else attrs
        for name, tower in self.towers.items():
            if hasattr(tower, "set_required_outputs"):
                tower.set_required_outputs(None if ALL_OUTPUTS in needs[name] else needs[name])

    # ------------------------------------------------------------------ forward / loss
    def encode(self, name: str, x: Any) -> TowerOutput:
        """Run tower ``name`` on ``x``; unknown names raise a ``KeyError`` listing the towers."""
        if name not in self.towers:
            raise KeyError(f"unknown tower {name!r}; this model has {sorted(self.towers)}")
        return self.towers[name](x)

    def encode_field(self, field: str, x: Any) -> TowerOutput:
        """Run the tower that batch field ``field`` is routed to on ``x``."""
        return self.encode(self.inputs.get(field, field), x)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, TowerOutput]:
        """Encode every routed field present in ``batch``; returns ``{field: TowerOutput}``."""
        outputs = {field: self.towers[name](batch[field]) for field, name in self.inputs.items() if field in batch}
        if not outputs:
            raise KeyError(f"batch has none of the routed fields {sorted(self.inputs)}; batch keys: {sorted(batch)}")
        return outputs

    def compute_losses(self, batch: Mapping[str, Any], check_finite: bool = True) -> dict[str, Tensor]:
        """Total loss under ``"loss"`` plus every term and its logged scalars (``"<term>"``, ``"<term>/<key>"``).

        Args:
            batch: inputs keyed by tower name plus whatever the loss terms read.
            check_finite: raise ``FloatingPointError`` naming the first non-finite term.
        """
        outputs = self(batch)
        logs: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term in self.losses:
            if term.optional:
                applies = term.applies_to(outputs, batch)
                logs[f"{term.name}/skipped"] = torch.tensor(0.0 if applies else 1.0)
                if not applies:
                    continue
            result = term(outputs, batch)
            value = result["loss"]
            if check_finite and not torch.isfinite(value):
                raise FloatingPointError(f"loss term {term.name!r} is {value.item()}; check inputs and learning rate")
            logs[term.name] = value.detach()
            for key, extra in result.items():
                if key != "loss":
                    logs[f"{term.name}/{key}"] = extra.detach() if isinstance(extra, Tensor) else torch.tensor(extra)
            weighted = term.weight * value
            total = weighted if total is None else total + weighted
        if total is None:
            raise KeyError(
                f"no loss term applies to this batch (fields {sorted(outputs)}, keys {sorted(batch)}); "
                "every term is optional and skipped"
            )
        logs["loss"] = total
        return logs

    def _step(self, batch: Mapping[str, Any], stage: str) -> Tensor:
        every = self.check_finite_every
        check = stage != "train" or (every > 0 and self.global_step % every == 0)
        logs = self.compute_losses(batch, check_finite=check)
        bs = _batch_size(batch)
        self.log(f"{stage}/loss", logs["loss"].detach(), prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        for key, value in logs.items():
            if key != "loss":
                self.log(f"{stage}/{key}", value.float(), batch_size=bs, sync_dist=stage != "train")
        return logs["loss"]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.named_parameters(), self.lr, self.weight_decay, self.lr_multipliers)
        if not groups:
            raise ValueError("no trainable parameters: every tower and loss is frozen")
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps)
        total = self.max_steps
        if total is None:
            total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        total = max(1, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(self.warmup_steps, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def clamp_parameters(self) -> None:
        """Clamp every temperature (modules exposing ``clamp_parameters``), as open_clip does after each step."""
        for module in self.modules():
            if module is not self and hasattr(module, "clamp_parameters"):
                module.clamp_parameters()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.clamp_parameters()

    # ------------------------------------------------------------------ sharing
    def config(self) -> dict[str, Any]:
        """The model as data: towers, loss terms and optimisation settings (``class_path``/``init_args``)."""
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": {
                "towers": {name: to_config(t) for name, t in self.towers.items()},
                "losses": [to_config(t) for t in self.losses],
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.hparams.items()},
            },
        }

    def export_config(self, directory: Path) -> dict[str, Any]:
        """:meth:`config`, with each tower's assets (a user-supplied tokenizer and encoder) written into
        ``directory`` and its config pointed at them."""
        config = self.config()
        for name, tower in self.towers.items():
            overrides = tower.export_assets(str(directory), name) if hasattr(tower, "export_assets") else None
            if overrides:
                config["init_args"]["towers"][name]["init_args"].update(overrides)
        return config

    def freeze_towers(self, names: Sequence[str]) -> None:
        """Freeze the named towers (LiT-style locking)."""
        for name in names:
            self.towers[name].requires_grad_(False)
