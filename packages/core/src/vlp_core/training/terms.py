"""Weighted loss terms: how a loss module is wired to tower outputs and batch entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from vlp_core.config import Configurable
from vlp_core.towers.base import TowerOutput

__all__ = ["LossTerm"]


class LossTerm(Configurable, nn.Module):
    """One named, weighted term of the pretraining objective.

    Each entry of ``inputs`` selects one positional argument of the loss:
    ``"text"`` → ``outputs["text"].embedding``; ``"ecg.tokens"`` / ``"ecg.mask"`` → that tower's tokens / mask;
    ``"ecg.extras.input_ids"`` → an extra; ``"batch:pos"`` → ``batch["pos"]``.
    A loss that needs more than positional tensors defines
    ``forward_outputs(outputs: dict[str, TowerOutput], batch: dict) -> dict | Tensor`` and receives everything.

    Args:
        name: key under which the term is logged (``train/<name>``).
        loss: the loss module; returns a scalar tensor or a dict with ``"loss"`` plus scalars to log.
        weight: multiplier in the total loss.
        inputs: argument selectors, see above.
    """

    def __init__(
        self, name: str, loss: nn.Module, weight: float = 1.0, inputs: Sequence[str] = ("image", "text")
    ) -> None:
        super().__init__()
        if not name or "/" in name:
            raise ValueError(f"loss term name must be non-empty and contain no '/', got {name!r}")
        self.name = name
        self.loss = loss
        self.weight = float(weight)
        self.inputs = tuple(inputs)

    def _select(self, key: str, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> Any:
        if key.startswith("batch:"):
            field = key[len("batch:") :]
            if field not in batch:
                raise KeyError(f"loss term {self.name!r} needs batch[{field!r}]; batch has {sorted(batch)}")
            return batch[field]
        tower, _, attr = key.partition(".")
        if tower not in outputs:
            raise KeyError(
                f"loss term {self.name!r} needs tower {tower!r}; towers run on this batch: {sorted(outputs)}"
            )
        out = outputs[tower]
        if not attr:
            return out.embedding
        if attr.startswith("extras."):
            return out.extras[attr[len("extras.") :]]
        value = getattr(out, attr)
        if value is None:
            raise ValueError(f"loss term {self.name!r} needs {key!r}, but tower {tower!r} produced none")
        return value

    def forward(self, outputs: Mapping[str, TowerOutput], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if hasattr(self.loss, "forward_outputs"):
            result = self.loss.forward_outputs(outputs, batch)
        else:
            result = self.loss(*[self._select(k, outputs, batch) for k in self.inputs])
        if isinstance(result, Tensor):
            result = {"loss": result}
        if "loss" not in result:
            raise KeyError(f"loss term {self.name!r}: the loss returned {sorted(result)} without a 'loss' key")
        return result
