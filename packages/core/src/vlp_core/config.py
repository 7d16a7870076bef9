"""Modules as data: record constructor arguments so a model can be written as JSON and rebuilt without pickle.

A class deriving from :class:`Configurable` remembers the arguments of its ``__init__``; :func:`to_config` turns a
module tree into ``{"class_path": ..., "init_args": ...}`` (the jsonargparse / LightningCLI convention, so the same
JSON is valid YAML config), and :func:`from_config` rebuilds it. Nothing is unpickled.

Safe by default: a config shared with a checkpoint is data from a stranger, and ``class_path`` must not become a way
to run code (``"subprocess.Popen"``). :func:`from_config` therefore builds only

- names registered in the vlp registries (``"ecg/resnet1d"``, ``"core/clip"``; see :mod:`vlp_core.registry`), and
  the dotted paths of registered entries;
- classes from the allow-listed module prefixes :data:`SAFE_MODULE_PREFIXES` (``vlp_*`` packages, ``torch.nn``)
  that derive from ``torch.nn.Module`` or :class:`Configurable`.

The check happens *before* anything is imported, so naming a module never runs its top-level code. Anything else
raises :class:`UnsafeConfigError` naming the class; ``trust_code=True`` opts out, like transformers'
``trust_remote_code`` (only for configs you trust as much as code you run).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["SAFE_MODULE_PREFIXES", "Configurable", "ConfigError", "UnsafeConfigError", "from_config", "to_config"]

#: Module prefixes whose ``nn.Module`` / :class:`Configurable` subclasses a config may name without ``trust_code``.
#: ``"vlp_"`` matches every top-level package ``vlp_<name>``; ``"torch.nn"`` matches ``torch.nn`` and its submodules.
SAFE_MODULE_PREFIXES: tuple[str, ...] = ("vlp_", "torch.nn")


class ConfigError(ValueError):
    """A module cannot be serialised to, or rebuilt from, a config."""


class UnsafeConfigError(ConfigError):
    """A config names a class outside the allow-list; rebuilding it could run arbitrary code."""


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


def _module_allowed(module: str) -> bool:
    for prefix in SAFE_MODULE_PREFIXES:
        if prefix.endswith("_"):
            if module.split(".", 1)[0].startswith(prefix):
                return True
        elif module == prefix or module.startswith(prefix + "."):
            return True
    return False


def _registered(name: str) -> tuple[Any, Any] | None:
    """``(registry, name)`` for a registered name such as ``"ecg/resnet1d"`` (loading plug-ins if needed)."""
    from vlp_core import registry

    def find() -> list[Any]:
        return [r for r in registry.registries().values() if r.kind != "demo" and name in r]

    hits = find()
    if not hits:
        from vlp_core.plugins import load_plugins

        load_plugins(strict=False)
        hits = find()
    if not hits:
        return None
    if len({r.target_path(name) for r in hits}) > 1:
        kinds = ", ".join(r.kind for r in hits)
        raise ConfigError(f"class_path {name!r} is registered differently as a {kinds}; use its dotted class path")
    return hits[0], name


def _registered_paths() -> set[str]:
    """Dotted paths of every registered entry (entries count as allow-listed wherever they live)."""
    from vlp_core import registry
    from vlp_core.plugins import load_plugins

    load_plugins(strict=False)
    return {r.target_path(n) for r in registry.registries().values() if r.kind != "demo" for n in r}


def _refuse(path: str, why: str) -> UnsafeConfigError:
    return UnsafeConfigError(
        f"refusing to build class_path {path!r}: {why}. A config may only name registered vlp components "
        f"(e.g. 'ecg/resnet1d') or nn.Module / Configurable classes under {', '.join(SAFE_MODULE_PREFIXES)}. "
        "If you trust where this config comes from as much as code you run, pass trust_code=True "
        "(e.g. Pretrainer.from_pretrained(path, trust_code=True))."
    )


def _import_class(path: str, trust_code: bool = False) -> Any:
    """Resolve ``path`` (registered name or dotted class path) to a constructor, enforcing the allow-list."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"class_path must be a non-empty string, got {path!r}")
    if "/" in path:
        found = _registered(path)
        if found is None:
            raise ConfigError(f"class_path {path!r} looks like a registered name, but no vlp registry has it")
        reg, name = found
        return reg.get(name)
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"class_path {path!r} must be a dotted path or a registered name")
    # Decide before importing anything: importing a module already runs its code.
    registered = not _module_allowed(module_name) and path in _registered_paths()
    if not trust_code and not _module_allowed(module_name) and not registered:
        raise _refuse(path, "its module is not on the allow-list")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"class_path {path!r}: cannot import {module_name!r} ({exc})") from exc
    obj = getattr(obj, name, None)
    if obj is None:
        raise ConfigError(f"class_path {path!r}: {module_name!r} has no {name!r}")
    if registered or trust_code:
        if not callable(obj):
            raise ConfigError(f"class_path {path!r} is not callable")
        return obj
    if not isinstance(obj, type):
        raise _refuse(path, f"it is a {type(obj).__name__}, not a class")
    if not issubclass(obj, (nn.Module, Configurable)):
        raise _refuse(path, "it is not a torch.nn.Module or vlp_core.config.Configurable subclass")
    # A vlp module may re-export a foreign class (``from subprocess import Popen`` would fail the check above;
    # this catches foreign Module subclasses): the defining module must be allow-listed too.
    if not _module_allowed(obj.__module__):
        raise _refuse(path, f"it is defined in {obj.__module__!r}, outside the allow-list")
    return obj


def from_config(value: Any, base_dir: str | None = None, *, trust_code: bool = False) -> Any:
    """Inverse of :func:`to_config`; builds only allow-listed classes unless ``trust_code=True``.

    Args:
        value: a config produced by :func:`to_config` (``class_path`` may also be a registered name such as
            ``"ecg/resnet1d"``, built by the registered constructor).
        base_dir: folder that strings starting with ``"@/"`` are relative to (assets saved beside a checkpoint).
        trust_code: build any importable callable the config names (like transformers' ``trust_remote_code``).
            Only for configs you trust as much as code you run.

    Raises:
        UnsafeConfigError: a ``class_path`` outside the allow-list (nothing has been imported or built for it).
        ConfigError: a ``class_path`` that cannot be resolved.
    """
    if isinstance(value, Mapping) and "class_path" in value:
        extra = set(value) - {"class_path", "init_args"}
        if extra:
            raise ConfigError(f"class_path {value['class_path']!r}: unexpected keys {sorted(extra)} beside init_args")
        cls = _import_class(value["class_path"], trust_code=trust_code)
        init_args = value.get("init_args", {})
        if not isinstance(init_args, Mapping):
            raise ConfigError(f"class_path {value['class_path']!r}: init_args must be a mapping")
        kwargs = {k: from_config(v, base_dir, trust_code=trust_code) for k, v in dict(init_args).items()}
        return cls(**kwargs)
    if isinstance(value, Mapping):
        return {k: from_config(v, base_dir, trust_code=trust_code) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [from_config(v, base_dir, trust_code=trust_code) for v in value]
    if isinstance(value, str) and value.startswith("@/"):
        if base_dir is None:
            raise ConfigError(f"{value!r} is relative to a checkpoint folder, but none was given")
        return str(Path(base_dir) / value[2:])
    return value
