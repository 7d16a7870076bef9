"""vlp-core: towers, contrastive losses, a Lightning pretrainer, evaluation and the plug-in registry of vlp.

Submodules are imported on use (``from vlp_core.losses import ClipLoss``); importing ``vlp_core`` itself is cheap
and never loads plug-ins.
"""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("vlp-core")
