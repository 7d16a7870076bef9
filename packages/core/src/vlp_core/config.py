"""Modules as data: record constructor arguments so a model can be written as JSON and rebuilt without pickle.

A class deriving from :class:`Configurable` remembers the arguments of its ``__init__``; :func:`to_config` turns a
module tree into ``{"class_path": ..., "init_args": ...}`` (the jsonargparse / LightningCLI convention, so the same
JSON is valid YAML config), and :func:`from_config` rebuilds it. Only importable classes named in the config are
constructed: nothing is unpickled.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["Configurable", "ConfigError", "from_config", "to_config"]


class ConfigError(ValueError):
    """A module cannot be serialised to, or rebuilt from, a config."""


class Configurable:
    """Mixin recording ``__init__`` arguments in ``self._init_args`` (outermost subclass wins)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args: Any, **kw: Any) -> None:
            outermost = not getattr(self, "_recording_init", False)
            if outermost:
                object.__setattr__(self, "_recording_init", True)
                bound = sig.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self", None)
                extra = {}
                for name, param in sig.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        extra = arguments.pop(name, {})
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and arguments.pop(name, ()):
                        raise ConfigError(f"{cls.__name__}: positional *args cannot be recorded in a config")
                arguments.update(extra)
            try:
                init(self, *args, **kw)
            finally:
                if outermost:
                    object.__setattr__(self, "_recording_init", False)
                    object.__setattr__(self, "_init_args", arguments)

        cls.__init__ = wrapped  # type: ignore[misc]


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_config(value: Any) -> Any:
    """JSON-serialisable description of ``value`` (modules become ``class_path`` + ``init_args``)."""
    if isinstance(value, Configurable):
        args = getattr(value, "_init_args", None)
        if args is None:
            raise ConfigError(f"{type(value).__name__} was not constructed through its recorded __init__")
        return {"class_path": _class_path(value), "init_args": {k: to_config(v) for k, v in args.items()}}
    if isinstance(value, nn.Module):
        raise ConfigError(
            f"cannot serialise {_class_path(value)}: derive it from vlp_core.config.Configurable "
            "(e.g. vlp_core.towers.Tower) so its constructor arguments are recorded"
        )
    if isinstance(value, Mapping):
        return {str(k): to_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_config(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "__fspath__"):
        return str(value)
    raise ConfigError(f"cannot serialise a value of type {type(value).__name__} into a config: {value!r}")


def _import_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"class_path {path!r} must be a dotted path")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"class_path {path!r}: cannot import {module_name!r} ({exc})") from exc
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"class_path {path!r}: {module_name!r} has no {name!r}")
    if not isinstance(obj, type):
        raise ConfigError(f"class_path {path!r} is not a class")
    return obj


def from_config(value: Any, base_dir: str | None = None) -> Any:
    """Inverse of :func:`to_config`.

    Args:
        value: a config produced by :func:`to_config`.
        base_dir: folder that strings starting with ``"@/"`` are relative to (assets saved beside a checkpoint).
    """
    if isinstance(value, Mapping) and "class_path" in value:
        cls = _import_class(value["class_path"])
        kwargs = {k: from_config(v, base_dir) for k, v in dict(value.get("init_args", {})).items()}
        return cls(**kwargs)
    if isinstance(value, Mapping):
        return {k: from_config(v, base_dir) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [from_config(v, base_dir) for v in value]
    if isinstance(value, str) and value.startswith("@/"):
        if base_dir is None:
            raise ConfigError(f"{value!r} is relative to a checkpoint folder, but none was given")
        return str(Path(base_dir) / value[2:])
    return value
