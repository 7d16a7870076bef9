"""vlp-ecg's plug-in follows core's conformance rules (register-only, namespaced, versioned, CLI help)."""

from __future__ import annotations

from vlp_core.testing import PluginConformance


class TestPluginConformance(PluginConformance):
    domain = "ecg"
