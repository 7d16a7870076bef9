"""Weighted loss terms: how a loss module is wired to tower outputs (by batch field) and batch entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.towers.base import TowerOutput

__all__ = ["ALL_OUTPUTS", "LossTerm"]

#: Marker in :meth:`LossTerm.needs`: the term may read anything a field's tower produces.
ALL_OUTPUTS = "*"


def _parse(key: str) -> tuple[str, str | None, str]:
    """``"batch:x"`` → ("batch", None, "x"); ``"text.extras.ids"`` → ("output", "text", "extras.ids")."""
    if key.startswith("batch:"):
        return "batch", None, key[len("batch:") :]
    field, _, attr = key.partition(".")
    return "output", field, attr or "embedding"


class LossTerm(Configurable, nn.Module):
    """One named, weighted term of the pretraining objective.

    Each selector in ``inputs`` picks one argument of the loss, by **batch field** (the key a tower output is
    stored under, see ``Pretrainer(inputs=...)``): ``"text"`` → ``outputs["text"].embedding``;
    ``"ecg.tokens"`` / ``"ecg.mask"`` → that field's tokens / mask (a ``None`` mask is passed as ``None``: all
    valid); ``"ecg.extras.beats"`` → an extra; ``"batch:aspects_owner"`` → ``batch["aspects_owner"]``.
    ``inputs`` is a sequence (positional arguments) or a mapping ``{argument name: selector}`` (keyword arguments).
    A loss that needs more defines ``forward_outputs(outputs, batch) -> dict | Tensor`` and receives everything
    (and, ideally, ``needs() -> {field: {"embedding", "tokens", "extras", ...}}`` so unused tower parts are not built).

    Args:
        name: key under which the term is logged (``train/<name>``).
        loss: the loss module; returns a scalar tensor or a dict with ``"loss"`` plus scalars to log.
        weight: multiplier in the total loss.
        inputs: argument selectors, see above.
        optional: skip the term (logging ``<name>/skipped = 1``) when a field or batch entry it reads is absent
            from the batch, so one model can train on batches from datasets with different modalities.
    """

    def __init__(
        self,
        name: str,
        loss: nn.Module,
        weight: float = 1.0,
        inputs: Sequence[str] | Mapping[str, str] = ("image", "text"),
        optional: bool = False,
    ) -> None:
        super().__init__()
        if not name or "/" in name:
            raise ValueError(f"loss term name must be non-empty and contain no '/', got {name!r}")
        self.name = name
        self.loss = loss
        self.weight = float(weight)
        self.inputs: tuple[str, ...] | dict[str, str] = dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs)
        self.optional = bool(optional)

    def _selectors(self) -> list[str]:
        return list(self.inputs.values()) if isinstance(self.inputs, dict) else list(self.inputs)

    def needs(self) -> dict[str, set[str]]:
        """Tower outputs this term reads, per batch field (``{"image": {"embedding"}, "text": {"extras"}}``)."""
        if hasattr(self.loss, "forward_outputs"):
            if hasattr(self.loss, "needs"):
                return {f: set(v) for f, v in self.loss.needs().items()}
            return {ALL_OUTPUTS: {ALL_OUTPUTS}}  # unknown: every field may read everything
        out: dict[str, set[str]] = {}
        for key in self._selectors():
            kind, field, attr = _parse(key)
            if kind == "output":
                out.setdefault(field, set()).add(attr.split(".")[0] if attr.startswith("extras") else attr)
        return out

    def batch_keys(self) -> set[str]:
        """Batch entries (``"batch:..."`` selectors) this term reads."""
        return {_parse(k)[2] for k in self._selectors() if k.startswith("batch:")}

    def applies_to(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> bool:
        """Whether every field and batch entry the term reads is present (used for ``optional`` terms)."""
        fields = set(self.needs()) - {ALL_OUTPUTS}
        return fields <= set(outputs) and self.batch_keys() <= set(batch)

    def _select(self, key: str, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> Any:
        kind, field, attr = _parse(key)
        if kind == "batch":
            if attr not in batch:
                raise KeyError(f"loss term {self.name!r} needs batch[{attr!r}]; batch has {sorted(batch)}")
            return batch[attr]
        if field not in outputs:
            raise KeyError(
                f"loss term {self.name!r} needs field {field!r}; fields encoded on this batch: {sorted(outputs)}"
            )
        out = outputs[field]
        if attr.startswith("extras."):
            name = attr[len("extras.") :]
            if name not in out.extras:
                raise KeyError(f"loss term {self.name!r} needs {key!r}; that tower's extras are {sorted(out.extras)}")
            return out.extras[name]
        value = getattr(out, attr)
        if value is None and attr != "mask":  # a missing mask means "all valid"
            raise ValueError(f"loss term {self.name!r} needs {key!r}, but the tower of field {field!r} produced none")
        return value

    def forward(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if hasattr(self.loss, "forward_outputs"):
            result = self.loss.forward_outputs(outputs, batch)
        elif isinstance(self.inputs, dict):
            result = self.loss(**{arg: self._select(k, outputs, batch) for arg, k in self.inputs.items()})
        else:
            result = self.loss(*[self._select(k, outputs, batch) for k in self.inputs])
        if isinstance(result, Tensor):
            result = {"loss": result}
        if "loss" not in result:
            raise KeyError(f"loss term {self.name!r}: the loss returned {sorted(result)} without a 'loss' key")
        return result
