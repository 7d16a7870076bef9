"""Registrations of vlp-surgical (register only; no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    """Register vlp-surgical components under the ``surgical/`` namespace (lazy ``module:attr`` targets)."""
    registry.towers.register("surgical/frame_resnet18", "vlp_surgical.models:frame_resnet18")
    registry.losses.register("surgical/procedure_dtw", "vlp_surgical.losses:ProcedureDTWLoss")
    registry.losses.register("surgical/soft_dtw", "vlp_surgical.dtw:SoftDTW")
    registry.datasets.register("surgical/procedure_corpus", "vlp_surgical.training:ProcedureCorpus")
    registry.datasets.register("surgical/narrations", "vlp_surgical.narration:read_narrations")
    registry.datasets.register("surgical/synthetic_procedures", "vlp_surgical.synth:make_procedures")
    registry.demos.register("surgical", "vlp_surgical.demo:run_demo")
