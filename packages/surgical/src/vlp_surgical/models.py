"""Video towers for surgical procedures: a per-frame encoder with temporal pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp_core.towers import ProjectionHead, Tower, TowerOutput

__all__ = ["FrameAverageTower", "HecVL", "TemporalAggregator", "frame_resnet18"]


class FrameAverageTower(Tower):
    """Encodes each frame with a timm backbone and averages over time.

    Args:
        model_name: timm backbone for single frames.
        embed_dim: output width.

    Shapes:
        ``forward(video [B, T, C, H, W])`` → ``embedding [B, D]``, ``tokens [B, T, D]`` (one token per frame).
    """

    def __init__(self, model_name: str = "resnet18", embed_dim: int = 256) -> None:
        super().__init__()
        import timm

        # A pooled backbone only: per-patch tokens are not used here, so no unused (DDP-breaking) token head.
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0)
        self.proj = ProjectionHead(int(self.backbone.num_features), embed_dim)
        self.output_dim = self.token_dim = embed_dim

    def forward(self, video: Tensor) -> TowerOutput:
        if video.ndim != 5:
            raise ValueError(f"FrameAverageTower expects video [B, T, C, H, W], got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        per_frame = self.proj(self.backbone(video.flatten(0, 1))).view(b, t, -1)
        return TowerOutput(per_frame.mean(1), per_frame, torch.ones(b, t, dtype=torch.bool, device=video.device))


def frame_resnet18(embed_dim: int = 256) -> FrameAverageTower:
    """ResNet-18 per frame, mean over time."""
    return FrameAverageTower("resnet18", embed_dim)


# --------------------------------------------------------------------------------------------------------- HecVL
class TemporalAggregator(nn.Module):
    """Pools frame features ``[B, T, D]`` (mask ``[B, T]``) to ``[B, D]``: ``"mean"`` (masked mean) or
    ``"transformer"`` (a small pre-norm encoder with learned positions, then masked mean)."""

    def __init__(self, dim: int, kind: str = "mean", layers: int = 1, heads: int = 4, max_len: int = 256) -> None:
        super().__init__()
        if kind not in ("mean", "transformer"):
            raise ValueError(f"temporal aggregation must be 'mean' or 'transformer', got {kind!r}")
        self.kind = kind
        if kind == "transformer":
            self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
            layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(pooled [B, D], per-frame [B, T, D])``."""
        if self.kind == "transformer":
            if x.shape[1] > self.pos.shape[1]:
                raise ValueError(f"sequence of {x.shape[1]} frames exceeds max_len={self.pos.shape[1]}")
            x = self.encoder(x + self.pos[:, : x.shape[1]], src_key_padding_mask=~mask)
        m = mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0), x


class HecVL(nn.Module):
    """Hierarchical video–language model (HecVL) with optional PeskaVLP procedure alignment.

    A timm frame encoder maps every frame to ``frame_dim``; segments (clips, phases, whole videos) are pooled over
    their frames by a :class:`TemporalAggregator`; each level (``clip``, ``phase``, ``video``) has its own visual and
    text projection into its own embedding space (the paper's separate spaces); texts go through core's frozen
    text tower (cached), so only its per-level projections train.

    Args:
        backbone: timm model name for single frames.
        frame_dim: width of frame features.
        embed_dim: width of each level's joint space.
        temporal: ``"mean"`` or ``"transformer"``.
        img_size: frames are resized to this square size.
        text_model_path: local Hugging Face text model (``None`` = packaged MiniLM).
        text_max_length: tokens per text.
        zeroshot_level: which level's space per-frame zero-shot classification uses.
        text_tower: an existing frozen ``TextTower(embed_dim=None, proj="none")`` to share (not saved in the config).
    """

    levels = ("clip", "phase", "video")

    def __init__(
        self,
        backbone: str = "test_resnet",
        frame_dim: int = 128,
        embed_dim: int = 128,
        temporal: str = "mean",
        img_size: int = 32,
        text_model_path: str | None = None,
        text_max_length: int = 64,
        zeroshot_level: str = "phase",
        text_tower: nn.Module | None = None,
    ) -> None:
        super().__init__()
        import timm

        from vlp_core.towers import TextTower

        self.config = {"backbone": backbone, "frame_dim": frame_dim, "embed_dim": embed_dim, "temporal": temporal,
                       "img_size": img_size, "text_model_path": text_model_path,
                       "text_max_length": text_max_length, "zeroshot_level": zeroshot_level}  # fmt: skip
        if zeroshot_level not in self.levels:
            raise ValueError(f"zeroshot_level must be one of {self.levels}")
        self.img_size, self.zeroshot_level = img_size, zeroshot_level
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        self.frame_proj = nn.Linear(int(self.backbone.num_features), frame_dim)
        self.temporal = TemporalAggregator(frame_dim, temporal)
        # A frozen tower without projection has no trainable weights, so several models may share one (and its cache).
        self.text = text_tower or TextTower(text_model_path, embed_dim=None, proj="none", max_length=text_max_length,
                                            freeze=True)  # fmt: skip
        tdim = self.text.output_dim
        self.vis_proj = nn.ModuleDict({lv: nn.Linear(frame_dim, embed_dim) for lv in self.levels})
        self.txt_proj = nn.ModuleDict({lv: nn.Linear(tdim, embed_dim) for lv in self.levels})
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ encoders
    def preprocess(self, frames: Tensor) -> Tensor:
        """``uint8 [N, H, W, 3]`` or float ``[N, 3, H, W]`` in [0, 1] → normalised ``[N, 3, S, S]``."""
        if frames.dtype == torch.uint8:
            frames = frames.permute(0, 3, 1, 2).float() / 255.0
        if frames.shape[-1] != self.img_size or frames.shape[-2] != self.img_size:
            frames = torch.nn.functional.interpolate(frames, size=(self.img_size, self.img_size), mode="bilinear",
                                                     antialias=True, align_corners=False)  # fmt: skip
        return (frames - self.mean) / self.std

    def encode_frames(self, frames: Tensor) -> Tensor:
        """Frame features ``[N, frame_dim]`` for ``N`` frames (see :meth:`preprocess` for accepted inputs)."""
        return self.frame_proj(self.backbone(self.preprocess(frames)))

    def pool_segments(self, feats: Tensor, segments: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pool frame features over segments.

        Args:
            feats: ``[N, F]`` features of all frames of a batch, concatenated.
            segments: ``[S, 2]`` long, ``[first, last)`` frame rows of each segment in ``feats``.

        Returns:
            ``(pooled [S, F], frames [S, L, F], mask [S, L])`` with ``L`` the longest segment.
        """
        lengths = (segments[:, 1] - segments[:, 0]).clamp_min(1)
        lmax = int(lengths.max())
        ar = torch.arange(lmax, device=feats.device)
        idx = (segments[:, :1] + ar).clamp_max(feats.shape[0] - 1)
        mask = ar[None] < lengths[:, None]
        seq = feats[idx] * mask[..., None]
        pooled, per_frame = self.temporal(seq, mask)
        return pooled, per_frame, mask

    def encode_text(self, texts: list[str], level: str) -> Tensor:
        """Text embeddings ``[M, embed_dim]`` in ``level``'s space."""
        return self.txt_proj[level](self.text(texts).embedding)

    def embed_video_level(self, pooled: Tensor, level: str) -> Tensor:
        return self.vis_proj[level](pooled)

    @torch.no_grad()
    def frame_embeddings(self, frames: Tensor, batch_size: int = 256) -> Tensor:
        """Per-frame embeddings in the zero-shot level's space ``[N, embed_dim]`` (single-frame segments)."""
        out = []
        for i in range(0, frames.shape[0], batch_size):
            f = self.encode_frames(frames[i : i + batch_size])
            seg = torch.stack((torch.arange(f.shape[0]), torch.arange(1, f.shape[0] + 1)), 1).to(f.device)
            pooled, _, _ = self.pool_segments(f, seg)
            out.append(self.vis_proj[self.zeroshot_level](pooled))
        return torch.cat(out)

    # ------------------------------------------------------------------ sharing
    def save_pretrained(self, directory: str) -> None:
        """``model.safetensors`` (trainable weights; the packaged text encoder is rebuilt) + ``config.json``."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("text.encoder.")}
        save_file(state, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"class": "vlp_surgical.models.HecVL", **self.config}, indent=1))

    @classmethod
    def from_pretrained(cls, directory: str) -> HecVL:
        """Inverse of :meth:`save_pretrained`; builds only this class (no code named by the config runs)."""
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        d = Path(directory)
        cfg = json.loads((d / "config.json").read_text())
        if cfg.pop("class", None) != "vlp_surgical.models.HecVL":
            raise ValueError(f"{d / 'config.json'} does not describe a vlp_surgical HecVL model")
        model = cls(**cfg)
        missing, unexpected = model.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
        missing = [k for k in missing if not k.startswith("text.encoder.")]
        if missing or unexpected:
            raise ValueError(f"{d}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})")
        return model
