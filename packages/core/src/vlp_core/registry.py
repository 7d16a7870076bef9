"""Named-constructor registries shared by every vlp package (timm-style, with lazy entries).

A domain package registers its whole models, towers, losses, datasets, transforms and demo in its plug-in's
``register(registry)`` function. Keys are namespaced by domain (``"ecg/resnet1d"``); values are callables or lazy
``"module:attr"`` strings that are imported only when first used, so listing plug-ins stays cheap.

Configs and command lines name components by these keys, as timm's ``create_model`` does::

    from vlp_core.registry import create
    tower = create("tower", "ecg/resnet1d", size="small")     # same as TOWERS.build("ecg/resnet1d", size="small")
    model = create("model", "ecg/melp", encoder="vit1d")

and a config's ``"class_path"`` may be a registered name (``{"class_path": "core/clip", "init_args": {}}``), see
:func:`vlp_core.config.from_config`.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "DATASETS",
    "DEMOS",
    "LOSSES",
    "MODELS",
    "TOWERS",
    "TRANSFORMS",
    "PluginRegistry",
    "Registry",
    "create",
    "registries",
    "resolve_lazy",
]


def resolve_lazy(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute.

    Raises:
        ValueError: if ``target`` is not of the form ``module:attr``.
        ImportError / AttributeError: with the target named, if it cannot be resolved.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"lazy registry target {target!r} must look like 'package.module:attribute'")
    module = importlib.import_module(module_name)
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise AttributeError(f"lazy registry target {target!r}: module {module_name!r} has no {attr!r}") from exc
    return obj


class Registry:
    """A mapping from names to constructors.

    Args:
        kind: what the registry holds, used in error messages ("tower", "loss", ...).

    Examples:
        >>> TOWERS = Registry("tower")
        >>> @TOWERS.register("core/identity")
        ... def identity(**kw): ...
        >>> TOWERS.register("ecg/resnet1d", "vlp_ecg.models:resnet1d")  # lazy
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None, *, overwrite: bool = False) -> Any:
        """Register ``obj`` under ``name``; with ``obj`` omitted, return a decorator.

        A clash raises instead of silently overwriting (timm warns and overwrites, which hides plug-in conflicts).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def _add(target: Any) -> Any:
            if name in self._entries and not overwrite and self._entries[name] is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._entries[name] = target
            return target

        if obj is None:
            return _add
        return _add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and by plug-in reloads)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Any:
        """Return the (resolved) entry for ``name``; unknown names raise a ``KeyError`` listing what exists."""
        try:
            entry = self._entries[name]
        except KeyError:
            available = ", ".join(sorted(self._entries)) or "none registered"
            hint = ""
            if self._entries and "/" not in name:
                close = [k for k in self._entries if k.split("/")[-1] == name]
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; available: {available}") from None
        if isinstance(entry, str):
            entry = resolve_lazy(entry)
            self._entries[name] = entry
        return entry

    def build(self, name: str, **kwargs: Any) -> Any:
        """Construct the entry registered under ``name`` with ``kwargs``."""
        factory: Callable[..., Any] = self.get(name)
        return factory(**kwargs)

    def target_path(self, name: str) -> str:
        """Dotted ``module.attr`` path of the entry under ``name``, without importing a lazy entry."""
        entry = self._entries[name]
        if isinstance(entry, str):
            return entry.replace(":", ".")
        return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}"

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern`` (``"ecg/*"``)."""
        return sorted(k for k in self._entries if fnmatch.fnmatchcase(k, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


MODELS = Registry("model")
TOWERS = Registry("tower")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
DEMOS = Registry("demo")

_BY_KIND = {r.kind: r for r in (MODELS, TOWERS, LOSSES, DATASETS, TRANSFORMS, DEMOS)}
_PLURAL = {"models": "model", "towers": "tower", "losses": "loss", "datasets": "dataset", "transforms": "transform",
           "demos": "demo"}  # fmt: skip


def registries() -> dict[str, Registry]:
    """The global registries by kind (``"model"``, ``"tower"``, ``"loss"``, ``"dataset"``, ``"transform"``,
    ``"demo"``)."""
    return dict(_BY_KIND)


def _registry(kind: str) -> Registry:
    reg = _BY_KIND.get(_PLURAL.get(kind, kind))
    if reg is None:
        raise KeyError(f"unknown registry kind {kind!r}; choose from {', '.join(_BY_KIND)}")
    return reg


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build the component registered as ``name`` in the ``kind`` registry (timm's ``create_model``, per kind).

    Installed plug-ins are loaded on first use, so ``create("tower", "ecg/resnet1d")`` works without importing
    ``vlp_ecg`` first.

    Args:
        kind: ``"model"``, ``"tower"``, ``"loss"``, ``"dataset"``, ``"transform"`` or ``"demo"`` (plurals accepted).
        name: registered name, e.g. ``"ecg/resnet1d"`` or ``"core/clip"``.
        **kwargs: constructor arguments.

    Raises:
        KeyError: unknown kind, or unknown name (the message lists what is registered).
    """
    reg = _registry(kind)
    if name not in reg:
        from vlp_core.plugins import load_plugins

        load_plugins(strict=False)
    return reg.build(name, **kwargs)


class PluginRegistry:
    """What a plug-in's ``register(registry)`` receives: the shared registries, nothing else.

    Plug-ins only add entries; being installed must never change behaviour (unlike Lightning's callback factory).
    ``models`` holds whole models (a :class:`~vlp_core.training.Pretrainer` with its towers and losses, e.g.
    ``"ecg/melp"``); ``towers`` holds single encoders.
    """

    def __init__(
        self,
        towers: Registry = TOWERS,
        losses: Registry = LOSSES,
        datasets: Registry = DATASETS,
        transforms: Registry = TRANSFORMS,
        demos: Registry = DEMOS,
        models: Registry = MODELS,
    ) -> None:
        self.models = models
        self.towers = towers
        self.losses = losses
        self.datasets = datasets
        self.transforms = transforms
        self.demos = demos
