"""Discovery of installed vlp domain packages through the ``vlp.plugins`` entry-point group.

Plug-ins are loaded lazily and once (never at ``import vlp_core``). ``VLP_PLUGINS=ecg,medical`` restricts which
are loaded. In a bare source checkout without installed metadata, ``load_plugins(fallback_modules=...)`` can import
``vlp_<domain>.plugin`` modules directly.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from vlp_core.registry import PluginRegistry

__all__ = ["GROUP", "PluginInfo", "PluginLoadError", "failed_plugins", "load_plugins", "loaded_plugins"]

GROUP = "vlp.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plug-in: entry-point name, distribution and its version."""

    name: str
    distribution: str
    version: str


class PluginLoadError(RuntimeError):
    """A plug-in's ``register`` failed; the message names the plug-in and its distribution."""


_LOADED: dict[str, PluginInfo] = {}
_FAILED: dict[str, tuple[PluginInfo, str]] = {}


def _allowed(env: str | None) -> set[str] | None:
    if env is None or not env.strip():
        return None
    return {x.strip() for x in env.split(",") if x.strip()}


def load_plugins(
    names: list[str] | None = None, registry: PluginRegistry | None = None, strict: bool = True
) -> list[PluginInfo]:
    """Load installed plug-ins once and return what is loaded.

    Args:
        names: load only these entry-point names (default: all, or ``$VLP_PLUGINS`` when set).
        registry: registries to fill (default: the global ones in :mod:`vlp_core.registry`).
        strict: raise on a failing plug-in; with ``False`` the failure is recorded (see :func:`failed_plugins`).

    Returns:
        Loaded plug-ins sorted with ``core`` first, then by name.

    Raises:
        PluginLoadError: a plug-in's ``register`` raised; the original error is chained.
    """
    registry = registry or PluginRegistry()
    wanted = set(names) if names is not None else _allowed(os.environ.get("VLP_PLUGINS"))
    if wanted is not None:
        wanted.add("core")  # core's own entries are always needed
    for ep in entry_points(group=GROUP):
        if ep.name in _LOADED or ep.name in _FAILED or (wanted is not None and ep.name not in wanted):
            continue
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "unknown"
        try:
            register = ep.load()
            register(registry)
        except Exception as exc:  # a broken plug-in must name itself, not crash with an anonymous traceback
            message = f"vlp plug-in {ep.name!r} from {dist} {version} failed to register: {exc}"
            if strict:
                raise PluginLoadError(message) from exc
            _FAILED[ep.name] = (PluginInfo(ep.name, dist, version), message)
            log.info(message)
            continue
        _LOADED[ep.name] = PluginInfo(ep.name, dist, version)
        log.debug("loaded vlp plug-in %s (%s %s)", ep.name, dist, version)
    return loaded_plugins()


def load_module_plugin(module: str, registry: PluginRegistry | None = None) -> None:
    """Fallback for source checkouts without installed metadata: import ``module`` and call its ``register``."""
    importlib.import_module(module).register(registry or PluginRegistry())


def failed_plugins() -> dict[str, tuple[PluginInfo, str]]:
    """Plug-ins whose registration failed under ``strict=False``: name → (info, message)."""
    return dict(_FAILED)


def loaded_plugins() -> list[PluginInfo]:
    """Plug-ins loaded so far, ``core`` first."""
    return sorted(_LOADED.values(), key=lambda p: (p.name != "core", p.name))
