"""vlp plug-in entry point: registers the ECG model, towers, datasets, transforms and the demo (lazily, no
side effects). Every name is usable where configs name components: ``vlp_core.registry.create("tower",
"ecg/resnet1d")`` or ``{"class_path": "ecg/resnet1d", "init_args": {...}}``."""

from __future__ import annotations

from vlp_core.registry import PluginRegistry

# build_transforms name -> class in vlp_ecg.transforms (kept here so registering imports nothing; a test checks that
# it equals build_transforms' table).
TRANSFORM_NAMES = {
    "resample": "Resample",
    "bandpass": "BandPass",
    "notch": "Notch",
    "normalize": "Normalize",
    "crop_pad": "CropPad",
    "random_crop": "RandomCrop",
    "lead_mask": "RandomLeadMask",
    "noise": "GaussianNoise",
    "baseline_wander": "BaselineWander",
    "amplitude_scale": "AmplitudeScale",
}


def register(registry: PluginRegistry) -> None:
    """Register vlp-ecg components under the ``ecg/`` namespace (lazy ``module:attr`` targets)."""
    registry.models.register("ecg/melp", "vlp_ecg.models:MELP")  # a whole model (towers + losses), not a tower
    registry.towers.register("ecg/resnet1d", "vlp_ecg.models:resnet1d_tower")
    registry.towers.register("ecg/vit1d", "vlp_ecg.models:vit1d_tower")
    registry.towers.register("ecg/report_text", "vlp_ecg.models:ReportTower")
    registry.datasets.register("ecg/ptbxl", "vlp_ecg.datasets:ptbxl_index")
    registry.datasets.register("ecg/mimic", "vlp_ecg.datasets:mimic_index")
    registry.datasets.register("ecg/ptbdb", "vlp_ecg.datasets:ptbdb_index")
    registry.datasets.register("ecg/manifest", "vlp_ecg.datasets:manifest_index")
    registry.datasets.register("ecg/store", "vlp_ecg.datasets:ECGStore")
    registry.datasets.register("ecg/synthetic_ptbxl", "vlp_ecg.synth:make_fake_ptbxl")
    # The same names as vlp_ecg.transforms.build_transforms accepts ({"name": "lead_mask", ...}), namespaced.
    for name, cls in TRANSFORM_NAMES.items():
        registry.transforms.register(f"ecg/{name}", f"vlp_ecg.transforms:{cls}")
    registry.demos.register("ecg", "vlp_ecg.demo:run_demo")
