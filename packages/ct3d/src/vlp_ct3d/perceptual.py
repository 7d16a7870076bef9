"""Perceptual loss for the 3D VAE — only from weights the user gives as a local file, never downloaded.

MONAI's ``PerceptualLoss`` cannot run offline with any of its default networks (alex/vgg/squeeze go through
torchvision/LPIPS downloads even with ``pretrained=False``; RadImageNet and MedicalNet go through ``torch.hub``).
Here the network is a MedicalNet-layout 3D ResNet built by MONAI (``monai.networks.nets.ResNet``, one input channel,
MedicalNet's shortcut type and down-sampling bias per depth, no classification head), so a MedicalNet checkpoint
(``resnet_10_23dataset.pth`` …, keys prefixed ``module.`` and often nested under ``state_dict``) or any state dict in
that layout loads without network access. The loss is LPIPS-style: per-volume z-score (as MedicalNet was trained),
features of the chosen residual stages, unit-normalised over channels, squared difference summed over channels,
averaged over space, summed over stages. The network is frozen and kept in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PERCEPTUAL_NETWORKS", "PerceptualLoss3d", "build_perceptual_network", "load_state_dict_file"]

# depth → (block, layers) as in MedicalNet / MONAI's resnet{10,18,34,50}
PERCEPTUAL_NETWORKS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "medicalnet_resnet10": ("basic", (1, 1, 1, 1)),
    "medicalnet_resnet18": ("basic", (2, 2, 2, 2)),
    "medicalnet_resnet34": ("basic", (3, 4, 6, 3)),
    "medicalnet_resnet50": ("bottleneck", (3, 4, 6, 3)),
}
# Keys of heads that MedicalNet / classification checkpoints carry and the feature extractor does not need.
_HEAD_PREFIXES = ("fc.", "conv_seg.")
STAGES = ("layer1", "layer2", "layer3", "layer4")


def build_perceptual_network(name: str) -> nn.Module:
    """A MedicalNet-layout 3D ResNet (random weights; load them with :func:`load_state_dict_file`)."""
    from monai.networks.nets import ResNet
    from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

    if name not in PERCEPTUAL_NETWORKS:
        raise ValueError(f"perceptual_network must be one of {sorted(PERCEPTUAL_NETWORKS)}, got {name!r}")
    block, layers = PERCEPTUAL_NETWORKS[name]
    depth = int(name.rsplit("resnet", 1)[1])
    bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(depth)
    return ResNet(block=block, layers=layers, block_inplanes=[64, 128, 256, 512], spatial_dims=3, n_input_channels=1,
                  shortcut_type=shortcut, bias_downsample=bias_downsample, feed_forward=False)  # fmt: skip


def load_state_dict_file(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read a local state dict: ``*.safetensors`` with safetensors, anything else with ``torch.load(weights_only=True)``.

    ``key`` selects a nested dict (e.g. MedicalNet's ``"state_dict"``); a leading ``module.`` (DataParallel) is
    removed from every key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights file {path} does not exist (weights are never downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise KeyError(
                f"{path} has no entry {key!r} (top-level keys: {sorted(state)[:10] if isinstance(state, dict) else type(state).__name__})"
            )
        state = state[key]
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


class PerceptualLoss3d(nn.Module):
    """LPIPS-style 3D perceptual distance from a frozen MedicalNet-layout ResNet with local weights.

    Args:
        network: one of :data:`PERCEPTUAL_NETWORKS`.
        weights_path: local state-dict file (safetensors or a ``torch.save`` file); required, never downloaded.
        state_dict_key: nested key of the state dict in the file (MedicalNet: ``"state_dict"``), if any.
        stages: residual stages whose features are compared.

    ``forward(input, target)`` with ``[B, C, D, H, W]`` volumes (channels compared one at a time) returns a scalar:
    0 for identical inputs, the batch mean otherwise.
    """

    def __init__(
        self,
        network: str = "medicalnet_resnet10",
        weights_path: str | Path | None = None,
        state_dict_key: str | None = None,
        stages: Sequence[str] = STAGES,
    ) -> None:
        super().__init__()
        if weights_path is None:
            raise ValueError(
                "a perceptual loss needs local weights: pass perceptual_weights_path (a MedicalNet-layout state dict, "
                "safetensors or torch.save file); nothing is downloaded"
            )
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {list(stages)}")
        self.net = build_perceptual_network(network)
        state = {k: v for k, v in load_state_dict_file(weights_path, state_dict_key).items()
                 if not k.startswith(_HEAD_PREFIXES)}  # fmt: skip
        own = self.net.state_dict()
        shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]  # fmt: skip
        if shapes:
            raise ValueError(f"{weights_path} does not fit {network}: shape mismatch {shapes[:3]}")
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} does not fit {network}: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
            )
        self.net.requires_grad_(False).eval()
        self.stages = tuple(stages)

    def train(self, mode: bool = True) -> PerceptualLoss3d:
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        n = self.net
        x = n.maxpool(n.act(n.bn1(n.conv1(x)))) if not n.no_max_pool else n.act(n.bn1(n.conv1(x)))
        out = []
        for name in STAGES[: max(STAGES.index(s) for s in self.stages) + 1]:
            x = getattr(n, name)(x)
            if name in self.stages:
                out.append(x)
        return out

    @staticmethod
    def _zscore(x: Tensor) -> Tensor:
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, *([1] * (x.ndim - 1)))
        std = flat.std(1).view(-1, *([1] * (x.ndim - 1)))
        return (x - mean) / (std + 1e-6)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if input.shape != target.shape or input.ndim != 5:
            raise ValueError(
                f"input and target must be [B, C, D, H, W] of one shape, got {input.shape} / {target.shape}"
            )
        total = input.new_zeros(())
        for c in range(input.shape[1]):
            fa = self.features(self._zscore(input[:, c : c + 1].float()))
            fb = self.features(self._zscore(target[:, c : c + 1].float()))
            for a, b in zip(fa, fb):
                a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + (a - b).pow(2).sum(1).flatten(1).mean(1).mean()
        return total / input.shape[1]
