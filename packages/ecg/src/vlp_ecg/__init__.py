"""vlp-ecg: ECG-language pretraining (MELP multi-scale: token, beat, rhythm) on WFDB data.

Modules: ``io`` (WFDB reading/writing, by-name lead order), ``transforms`` (seeded dict transforms), ``datasets``
(PTB-XL / MIMIC-IV-ECG / PTB Diagnostic / manifest indexers, prepared memmap store, torch dataset, data module),
``beats`` (R-peak detector), ``models`` (encoders, towers, MELP; its caption and GLoRIA losses live in core),
``eval`` (zero-shot, linear probe), ``synth`` (synthetic 12-lead ECGs), ``plot``, ``demo``, ``cli``, ``plugin``.
Submodules are imported on demand, so ``import vlp_ecg`` stays cheap.
"""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("vlp-ecg")
