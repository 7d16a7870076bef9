"""Image tower over any timm architecture (random init, or weights from a local file)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vlp_core.towers.base import ProjectionHead, Tower, TowerOutput

__all__ = ["ImageTower", "load_state_dict_file"]


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Load weights from ``.safetensors`` or a torch file with ``weights_only=True`` (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


class ImageTower(Tower):
    """timm backbone + pooled projection + projected patch tokens.

    Args:
        model_name: any ``timm.list_models()`` name, e.g. ``"vit_tiny_patch16_224"``, ``"resnet18"``.
        embed_dim: output width of the global embedding and tokens.
        proj: ``"linear"``, ``"mlp"`` or ``"none"``.
        pretrained_path: local ``.safetensors``/``.pth`` file with backbone weights (keys as in timm);
            ``None`` = random initialisation. Nothing is ever downloaded.
        in_chans: input channels (1 for grey radiographs).
        **timm_kwargs: forwarded to ``timm.create_model`` (``img_size``, ``drop_path_rate``...).

    Shapes:
        ``forward(images [B, C, H, W])`` returns ``embedding [B, D]``, ``tokens [B, T, D]`` (ViT patch tokens
        without prefix tokens, or CNN feature-map positions). Inside a Pretrainer whose losses read no tokens the
        token head is not built and ``tokens`` is ``None``.
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        embed_dim: int = 256,
        proj: str = "linear",
        pretrained_path: str | None = None,
        in_chans: int = 3,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        import timm

        if model_name not in timm.list_models():
            raise KeyError(f"unknown timm model {model_name!r} (see timm.list_models())")
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **timm_kwargs)
        if pretrained_path is not None:
            state = load_state_dict_file(pretrained_path)
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            # Classifier heads are expected to be absent (num_classes=0); anything else is a real mismatch.
            missing = [k for k in missing if not k.startswith(("head", "fc", "classifier"))]
            unexpected = [k for k in unexpected if not k.startswith(("head", "fc", "classifier"))]
            if missing or unexpected:
                raise ValueError(
                    f"weights {pretrained_path!r} do not fit {model_name!r}: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        width = int(self.backbone.num_features)
        self.output_dim = self.token_dim = int(embed_dim)
        self.proj = ProjectionHead(width, self.output_dim, proj)
        self.token_proj: ProjectionHead | None = ProjectionHead(width, self.output_dim, proj)
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enabled)

    def set_required_outputs(self, required: set[str] | None) -> None:
        # Without a token-reading loss the token head would get no gradient: do not build it.
        if required is not None and not required & {"tokens", "mask"}:
            self.token_proj = None

    def forward(self, images: Tensor) -> TowerOutput:
        if images.ndim != 4:
            raise ValueError(f"ImageTower expects images [B, C, H, W], got shape {tuple(images.shape)}")
        feats = self.backbone.forward_features(images)
        pooled = self.backbone.forward_head(feats, pre_logits=True)
        if self.token_proj is None:
            return TowerOutput(self.proj(pooled))
        if feats.ndim == 4:  # CNN: [B, C, H, W] -> positions as tokens
            tokens = feats.flatten(2).transpose(1, 2)
        else:  # ViT-like: [B, prefix + T, C]
            tokens = feats[:, self.num_prefix_tokens :]
        return TowerOutput(self.proj(pooled), self.token_proj(tokens))
