"""The Lightning pretrainer: a dict of named towers, batch fields routed to them, and weighted loss terms.

The trainer owns the loop; this module owns the math. A domain adds towers and losses through configuration, not
by subclassing: ``Pretrainer(towers={"ecg": ..., "text": TextTower()}, losses=[LossTerm("clip", ClipLoss(),
inputs=("ecg", "text"))])``. Several batch fields can share one tower: ``inputs={"report": "text", "aspects":
"text", "image": "image"}`` encodes both text fields with the same weights (and cache); outputs are keyed by field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from vlp_core.config import from_config, to_config
from vlp_core.towers.base import TowerOutput
from vlp_core.training.schedule import WarmupCosine, param_groups
from vlp_core.training.terms import ALL_OUTPUTS, LossTerm

__all__ = ["Pretrainer", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
        if isinstance(value, (list, tuple)):
            return len(value)
    return 1


class Pretrainer(L.LightningModule):
    """Multi-tower contrastive (and beyond) pretraining.

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

    # ------------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank's own RNG state (as tensors/ints only, so the .ckpt still loads with weights_only=True): each
        # rank draws its own dropout masks and augmentations, so restoring rank 0's state everywhere is not exact.
        states = _gather_rng_states(_rng_state(), self)
        checkpoint["vlp_rng"] = states[0]  # vlp-core 0.1 layout, read by older versions
        checkpoint["vlp_rng_ranks"] = states
        checkpoint["vlp_config"] = json.dumps(self.config())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ranks = checkpoint.get("vlp_rng_ranks")
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        if ranks is not None and len(ranks) == world:
            _set_rng_state(ranks[rank])
        elif ranks is not None or checkpoint.get("vlp_rng") is not None:
            if world > 1 or ranks is not None:
                import warnings

                n = len(ranks) if ranks is not None else 1
                warnings.warn(
                    f"checkpoint holds RNG states of {n} rank(s) but this run has {world}: every rank restores "
                    "rank 0's state, so the resumed run is not bit-identical to an uninterrupted one",
                    stacklevel=2,
                )
            _set_rng_state(ranks[0] if ranks is not None else checkpoint["vlp_rng"])

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

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (plus tower assets such as tokenizers) to ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config()
        for name, tower in self.towers.items():
            overrides = tower.export_assets(str(directory), name) if hasattr(tower, "export_assets") else None
            if overrides:
                config["init_args"]["towers"][name]["init_args"].update(overrides)
        # safetensors refuses shared storage: write a contiguous copy of every tensor.
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "vlp"})
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu", trust_code: bool = False
    ) -> Pretrainer:
        """Rebuild from :meth:`save_pretrained` output; weights are loaded strictly, no pickle involved.

        The model is returned in eval mode (as transformers' ``from_pretrained`` does), so encoders with batch norm
        or dropout give the saved model's outputs; ``Trainer.fit`` switches it back to training.
        ``config.json`` may only name registered vlp components and ``nn.Module`` classes of ``vlp_*`` / ``torch.nn``
        (see :func:`vlp_core.config.from_config`); ``trust_code=True`` lifts that for configs you trust like code.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a vlp checkpoint folder: {name} is missing")
        config = json.loads((directory / CONFIG_NAME).read_text())
        model = from_config(config, base_dir=str(directory), trust_code=trust_code)
        if not isinstance(model, Pretrainer):
            raise TypeError(f"{directory / CONFIG_NAME} describes {type(model).__name__}, not a Pretrainer")
        state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
        model.load_state_dict(state, strict=True)
        return model.eval()

    def freeze_towers(self, names: Sequence[str]) -> None:
        """Freeze the named towers (LiT-style locking)."""
        for name in names:
            self.towers[name].requires_grad_(False)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: torch.cuda.device_count()])


def _gather_rng_states(state: dict[str, Any], module: L.LightningModule) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: called on all ranks, as Lightning's checkpoint dump is)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    device = module.device  # NCCL gathers device tensors only
    out: list[dict[str, Any]] = [{} for _ in range(dist.get_world_size())]
    for key, value in state.items():
        t = torch.as_tensor(value).to(device)
        parts = [torch.empty_like(t) for _ in out]
        dist.all_gather(parts, t.contiguous())
        for r, part in enumerate(parts):
            out[r][key] = int(part) if isinstance(value, int) else part.cpu()
    return out
