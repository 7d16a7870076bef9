"""vlp-medical: a vlp domain package (see the package README for what it provides so far)."""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("vlp-medical")
