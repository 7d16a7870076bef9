"""What every vlp Lightning module shares: safetensors + JSON config, safe rebuilding, exact resume.

:class:`~vlp_core.training.Pretrainer` is one such module; training that is not contrastive pretraining (a VAE's
generator/discriminator pair, a diffusion model with an EMA copy) brings its own Lightning module and inherits the
same sharing and resume behaviour from :class:`VlpModule` instead of re-implementing it.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import numpy as np
import torch

from vlp_core.config import ConfigError, Configurable, from_config, to_config

__all__ = ["VlpModule", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

M = TypeVar("M", bound="VlpModule")


class VlpModule(L.LightningModule):
    """Base of vlp's Lightning modules.

    - :meth:`save_pretrained` writes ``model.safetensors`` (every parameter and buffer) + ``config.json``;
      :meth:`from_pretrained` rebuilds the module from them without unpickling anything, building only allow-listed
      classes (:func:`vlp_core.config.from_config`) unless ``trust_code=True``.
    - Lightning checkpoints carry every rank's RNG state (tensors and ints only, so a ``.ckpt`` loads with
      ``torch.load(weights_only=True)``) and the config as JSON (``"vlp_config"``): resuming gives the run that
      never stopped.

    Subclasses describe themselves with :meth:`config`; the default is :func:`~vlp_core.config.to_config` of a
    :class:`~vlp_core.config.Configurable` module (constructor arguments recorded as plain data).
    """

    def config(self) -> dict[str, Any]:
        """The module as data (``class_path`` / ``init_args``)."""
        if not isinstance(self, Configurable):
            raise ConfigError(f"{type(self).__name__} cannot describe itself: define config() or mix in Configurable")
        return to_config(self)

    def export_config(self, directory: Path) -> dict[str, Any]:
        """The config written by :meth:`save_pretrained`; a hook for modules that also write assets (tokenizers)
        into ``directory`` and point their config at them."""
        return self.config()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (and any assets :meth:`export_config` writes)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.export_config(directory)
        # safetensors refuses shared storage: write a contiguous copy of every tensor.
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "vlp"})
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M], directory: str | Path, map_location: str | torch.device = "cpu", trust_code: bool = False
    ) -> M:
        """Rebuild from :meth:`save_pretrained` output; weights are loaded strictly, no pickle involved.

        The module is returned in eval mode (as transformers' ``from_pretrained`` does); ``Trainer.fit`` switches it
        back to training. ``config.json`` may only name registered vlp components and ``nn.Module`` classes of
        ``vlp_*`` / ``torch.nn`` (see :func:`vlp_core.config.from_config`); ``trust_code=True`` lifts that for
        configs you trust like code.

        Raises:
            FileNotFoundError: ``directory`` lacks ``config.json`` or ``model.safetensors``.
            TypeError: the config describes a module that is not a ``cls``.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a vlp checkpoint folder: {name} is missing")
        config = json.loads((directory / CONFIG_NAME).read_text())
        model = from_config(config, base_dir=str(directory), trust_code=trust_code)
        if not isinstance(model, cls):
            raise TypeError(f"{directory / CONFIG_NAME} describes {type(model).__name__}, not a {cls.__name__}")
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device=str(map_location)), strict=True)
        return model.eval()

    @classmethod
    def from_checkpoint(
        cls: type[M],
        path: str | Path,
        map_location: str | torch.device = "cpu",
        trust_code: bool = False,
        legacy: Callable[[Mapping[str, Any]], VlpModule] | None = None,
    ) -> M:
        """Rebuild from a Lightning ``.ckpt`` of a vlp run, without running code it names.

        The file is opened with ``torch.load(weights_only=True)`` (tensors and plain data only) and the module is
        rebuilt from the ``vlp_config`` JSON that :meth:`on_save_checkpoint` stores, through the same allow-listed
        :func:`~vlp_core.config.from_config` as :meth:`from_pretrained`; weights are loaded strictly and the module is
        returned in eval mode.

        Args:
            path: the ``.ckpt`` file.
            map_location: device for the loaded tensors.
            trust_code: allow the config to name classes outside vlp's allow-list (files you trust like code).
            legacy: builds the (untrained) module from the loaded checkpoint when it has no ``vlp_config`` (files
                written before it existed, e.g. from their ``hyper_parameters``); without it such a file is an error.

        Raises:
            FileNotFoundError: ``path`` is not a file.
            ValueError: the checkpoint holds pickled objects other than tensors and plain data, or has no
                ``vlp_config`` and no ``legacy`` builder was given.
            TypeError: the config describes a module that is not a ``cls``.
        """
        import pickle

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path}: refusing to unpickle arbitrary objects (torch.load weights_only=True failed). A vlp "
                f"checkpoint holds only tensors and plain data; this one does not. Details: {exc}"
            ) from exc
        if "vlp_config" in ckpt:
            model = from_config(json.loads(ckpt["vlp_config"]), trust_code=trust_code)
        elif legacy is not None:
            model = legacy(ckpt)
        else:
            raise ValueError(f"{path}: no 'vlp_config' entry; it was not written by a vlp module's Lightning run")
        if not isinstance(model, cls):
            raise TypeError(f"{path}: vlp_config describes {type(model).__name__}, not a {cls.__name__}")
        model.load_state_dict(ckpt["state_dict"], strict=True)
        return model.eval()

    # ------------------------------------------------------------------ exact resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank's own RNG state: each rank draws its own dropout masks, noise and augmentations, so restoring
        # rank 0's state everywhere is not exact.
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
                n = len(ranks) if ranks is not None else 1
                warnings.warn(
                    f"checkpoint holds RNG states of {n} rank(s) but this run has {world}: every rank restores "
                    "rank 0's state, so the resumed run is not bit-identical to an uninterrupted one",
                    stacklevel=2,
                )
            _set_rng_state(ranks[0] if ranks is not None else checkpoint["vlp_rng"])


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
