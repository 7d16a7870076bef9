"""Registrations of vlp-medical (register only; no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    """Register vlp-medical towers, losses, datasets, transforms and the demo under ``medical/`` (lazily)."""
    registry.towers.register("medical/cxr_vit_tiny", "vlp_medical.models:cxr_vit_tiny")
    registry.towers.register("medical/derm_vit_tiny", "vlp_medical.models:derm_vit_tiny")
    registry.towers.register("medical/cxr_vit_small_input", "vlp_medical.models:cxr_vit_small_input")
    registry.towers.register("medical/probabilistic", "vlp_medical.prob:ProbabilisticTower")
    registry.losses.register("medical/make", "vlp_medical.make:MakeLoss")
    registry.losses.register("medical/hellinger_infonce", "vlp_medical.prob:HellingerInfoNCE")
    registry.losses.register("medical/pcmepp", "vlp_medical.prob:PCMEppLoss")
    registry.losses.register("medical/sampled_instance", "vlp_medical.prob:SampledInstanceLoss")
    registry.losses.register("medical/vib", "vlp_medical.prob:VIBLoss")
    registry.losses.register("medical/binding", "vlp_medical.models:BindingLoss")
    registry.datasets.register("medical/mimic_cxr", "vlp_medical.datasets:mimic_cxr_index")
    registry.datasets.register("medical/chexpert", "vlp_medical.datasets:chexpert_index")
    registry.datasets.register("medical/iu_xray", "vlp_medical.datasets:iu_xray_index")
    registry.datasets.register("medical/manifest", "vlp_medical.datasets:manifest_index")
    registry.datasets.register("medical/phantom_mimic_cxr", "vlp_medical.synth:make_fake_mimic_cxr")
    registry.transforms.register("medical/cxr", "vlp_medical.transforms:CxrTransform")
    registry.demos.register("medical", "vlp_medical.demo:run_demo")
