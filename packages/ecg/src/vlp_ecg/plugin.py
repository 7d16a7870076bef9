"""vlp plug-in entry point: registers ECG towers, losses, datasets, transforms and the demo (lazily, no side effects)."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry


def register(registry: PluginRegistry) -> None:
    """Register vlp-ecg components under the ``ecg/`` namespace (lazy ``module:attr`` targets)."""
    registry.towers.register("ecg/resnet1d", "vlp_ecg.models:resnet1d_tower")
    registry.towers.register("ecg/vit1d", "vlp_ecg.models:vit1d_tower")
    registry.towers.register("ecg/report_text", "vlp_ecg.models:ReportTower")
    registry.towers.register("ecg/melp", "vlp_ecg.models:build_melp")
    registry.datasets.register("ecg/ptbxl", "vlp_ecg.datasets:ptbxl_index")
    registry.datasets.register("ecg/mimic", "vlp_ecg.datasets:mimic_index")
    registry.datasets.register("ecg/ptbdb", "vlp_ecg.datasets:ptbdb_index")
    registry.datasets.register("ecg/manifest", "vlp_ecg.datasets:manifest_index")
    registry.datasets.register("ecg/store", "vlp_ecg.datasets:ECGStore")
    registry.datasets.register("ecg/synthetic_ptbxl", "vlp_ecg.synth:make_fake_ptbxl")
    for name in ("Resample", "BandPass", "Notch", "Normalize", "CropPad", "RandomCrop", "RandomLeadMask",
                 "GaussianNoise", "BaselineWander", "AmplitudeScale"):  # fmt: skip
        registry.transforms.register(f"ecg/{name.lower()}", f"vlp_ecg.transforms:{name}")
    registry.demos.register("ecg", "vlp_ecg.demo:run_demo")
