"""ECG encoders (1-D ResNet, patch transformer), beat/rhythm poolers, the report tower and MELP assembly.

Shapes: ``B`` batch, ``C`` leads, ``T`` samples, ``N`` encoder tokens, ``W`` encoder width, ``D`` shared
embedding width, ``Nb`` beats, ``S`` sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlp_core.losses import CaptionLoss, ClipLoss, LocalAlignmentLoss
from vlp_core.text import split_sentences
from vlp_core.towers import AttentionalPooler, ProjectionHead, TextTower, Tower, TowerOutput
from vlp_core.training import LossTerm, Pretrainer
from vlp_ecg.beats import detect_rpeaks

__all__ = [
    "ENCODER_SIZES",
    "ECGTower",
    "ReportTower",
    "ResNet1d",
    "ViT1d",
    "MELP",
    "conv_geometry",
    "resnet1d_tower",
    "vit1d_tower",
    "load_model",
    "pool_beats",
]

ENCODER_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "resnet1d": {
        "tiny": {"width": 16, "layers": (1, 1, 1, 1)},
        "small": {"width": 32, "layers": (1, 1, 1, 1)},
        "base": {"width": 64, "layers": (2, 2, 2, 2)},  # ResNet18-1D (MERL)
        "large": {"width": 64, "layers": (3, 4, 6, 3)},  # ResNet34-1D
    },
    "vit1d": {
        "tiny": {"width": 32, "depth": 1, "heads": 2},
        "small": {"width": 192, "depth": 6, "heads": 3},
        "base": {"width": 384, "depth": 12, "heads": 6},  # ViT-small-1D (MERL)
        "large": {"width": 768, "depth": 8, "heads": 12},  # MELP-small width/depth
    },
}


def conv_geometry(convs: Sequence[nn.Conv1d]) -> tuple[int, float, int]:
    """Token geometry of a chain of 1-D convolutions along an encoder's main path.

    A convolution with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` centres output ``j`` on input
    ``j*s - p + d*(k-1)/2``; composing the chain gives token ``n``'s centre ``offset + n*stride`` in input samples
    and its receptive field (``rf`` samples).

    Returns:
        ``(stride, offset, rf)``.
    """
    stride, offset, rf = 1, 0.0, 1
    for c in convs:
        k, st, pad, dil = c.kernel_size[0], c.stride[0], c.padding[0], c.dilation[0]
        if isinstance(pad, str):
            raise ValueError(f"string padding {pad!r} is not supported by conv_geometry")
        offset += stride * (dil * (k - 1) / 2 - pad)
        rf += stride * dil * (k - 1)
        stride *= st
    return stride, float(offset), rf


class _Block1d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 7, stride, 3, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 7, 1, 3, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.act = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + idt)


class ResNet1d(nn.Module):
    """1-D ResNet (MERL shapes: stem k7 s2, stages with strides 1, 2, 2, 2, no max-pool).

    Args:
        in_leads: input channels C.
        width: stage-1 width (stages double it).
        layers: blocks per stage.

    Shapes:
        ``forward(x [B, C, T]) -> tokens [B, ceil(T/16), 8*width]``; :attr:`stride` = 16 samples per token, token
        ``n`` centred on sample ``offset + n*stride`` (:meth:`token_centers`; ``offset`` = 0 here, because the
        padded strided convolutions centre output ``j`` on input ``2j``, not ``2j + 0.5``).
    """

    def __init__(self, in_leads: int = 12, width: int = 64, layers: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(in_leads, width, 15, 2, 7, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)
        )
        blocks, cin = [], width
        for i, n in enumerate(layers):
            cout = width * 2**i
            for j in range(n):
                blocks.append(_Block1d(cin, cout, (1 if i == 0 else 2) if j == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = cin
        # Main-path convolutions (the 1x1 shortcut convolutions have the same stride and centre).
        main = [self.stem[0]] + [c for b in blocks for c in (b.conv1, b.conv2)]
        self.stride, self.offset, self.receptive_field = conv_geometry(main)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x)).transpose(1, 2)

    def token_centers(self, n: int, device: torch.device | None = None) -> Tensor:
        """Input-sample centre of each of ``n`` tokens ``[n]`` (float)."""
        return self.offset + self.stride * torch.arange(n, device=device, dtype=torch.float32)


class ViT1d(nn.Module):
    """Patch transformer: non-overlapping patches -> linear embedding + learned positions -> pre-norm encoder.

    Args:
        in_leads: C.
        patch: samples per token (50 at 500 Hz = 100 ms; 10 at 100 Hz).
        width, depth, heads: transformer size.
        max_tokens: positional table size (longer inputs interpolate it).

    Shapes:
        ``forward(x [B, C, T]) -> tokens [B, T // patch, width]``.
    """

    def __init__(
        self, in_leads: int = 12, patch: int = 10, width: int = 192, depth: int = 6, heads: int = 3,
        max_tokens: int = 512, dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embed = nn.Conv1d(in_leads, width, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out_dim = width
        # Attention mixes tokens, but each token's own patch is [n*patch, (n+1)*patch): centre n*patch + (patch-1)/2.
        self.stride, self.offset, self.receptive_field = conv_geometry([self.embed])

    def token_centers(self, n: int, device: torch.device | None = None) -> Tensor:
        """Input-sample centre of each of ``n`` patch tokens ``[n]`` (float)."""
        return self.offset + self.stride * torch.arange(n, device=device, dtype=torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(x).transpose(1, 2)
        n = t.shape[1]
        pos = self.pos
        if n > pos.shape[1]:
            pos = nn.functional.interpolate(pos.transpose(1, 2), size=n, mode="linear").transpose(1, 2)
        return self.norm(self.encoder(t + pos[:, :n]))


def pool_beats(
    tokens: Tensor,
    rpeaks: Tensor,
    stride: float,
    fs: float,
    before: float = 0.25,
    after: float = 0.45,
    offset: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Average encoder tokens whose centres fall inside a window around each R peak.

    Args:
        tokens: ``[B, N, W]`` encoder tokens; token ``n`` is centred on input sample ``offset + n*stride``.
        rpeaks: ``[B, Nb]`` long R-peak sample indices, ``-1`` = padding.
        stride: samples per token.
        fs: sampling rate (Hz).
        before / after: window around the R peak (s).
        offset: centre of token 0 in input samples, from the encoder's real convolution geometry
            (:func:`conv_geometry`; the :class:`ECGTower` passes it). ``None`` assumes a non-overlapping patch
            embedding, ``(stride - 1) / 2``.

    Returns:
        ``beats [B, Nb, W]`` and ``beat_mask [B, Nb]`` (False for padding).
    """
    n = tokens.shape[1]
    offset = (stride - 1) / 2 if offset is None else offset
    centers = offset + stride * torch.arange(n, device=tokens.device, dtype=torch.float32)  # [N]
    r = rpeaks.to(torch.float32)
    valid = rpeaks >= 0
    lo, hi = r - before * fs, r + after * fs
    w = ((centers[None, None] >= lo[..., None]) & (centers[None, None] < hi[..., None])).to(tokens.dtype)
    # A window narrower than a token still takes the token centred nearest to the R peak.
    nearest = ((r - offset) / stride).round().clamp(0, n - 1).long()
    w = torch.where(w.sum(-1, keepdim=True) > 0, w, nn.functional.one_hot(nearest, n).to(tokens.dtype))
    w = w * valid[..., None].to(tokens.dtype)
    beats = torch.bmm(w, tokens) / w.sum(-1, keepdim=True).clamp_min(1.0)
    return beats, valid


class ECGTower(Tower):
    """ECG encoder + MELP heads: rhythm (global) embedding, token states for captioning, beat embeddings.

    Args:
        encoder: ``"resnet1d"`` or ``"vit1d"``.
        size: preset in :data:`ENCODER_SIZES` (``tiny`` for tests, ``base``/``large`` for real runs).
        in_leads: number of input leads C.
        fs: input sampling rate (Hz), needed to place beat windows.
        embed_dim: shared embedding width D (rhythm and beats).
        token_dim: width of the token states given to the caption decoder.
        beats: ``"rpeak"`` (pool encoder tokens around detected R peaks; default), ``"queries"`` (MELP's learned
            queries) or ``"none"``.
        n_beat_queries: queries for ``beats="queries"``.
        proj: projection head kind for the rhythm embedding (``linear``/``mlp``).
        patch: ViT patch length (samples).
        encoder_kwargs: overrides of the size preset.
        pool: rhythm pooling over tokens: ``"mean"`` or ``"meanmax"`` (mean and max concatenated; max keeps rare
            events such as a single premature beat visible).

    Shapes:
        ``forward(x)`` with ``x`` a ``[B, C, T]`` tensor or a dict ``{"signal": [B, C, T], "rpeaks": [B, Nb]
        (optional, -1 padded), "lead_mask": [B, C] (optional)}`` returns ``embedding [B, D]``, ``tokens [B, N,
        token_dim]``, and ``extras["beats"] [B, Nb, D]``, ``extras["beat_mask"] [B, Nb]``.
    """

    def __init__(
        self,
        encoder: str = "resnet1d",
        size: str = "base",
        in_leads: int = 12,
        fs: float = 100.0,
        embed_dim: int = 256,
        token_dim: int = 256,
        beats: str = "rpeak",
        n_beat_queries: int = 12,
        proj: str = "mlp",
        patch: int = 10,
        encoder_kwargs: dict[str, Any] | None = None,
        pool: str = "meanmax",
    ) -> None:
        super().__init__()
        if encoder not in ENCODER_SIZES:
            raise KeyError(f"unknown ECG encoder {encoder!r}; available: {sorted(ENCODER_SIZES)}")
        if size not in ENCODER_SIZES[encoder]:
            raise KeyError(f"unknown size {size!r} for {encoder}; available: {sorted(ENCODER_SIZES[encoder])}")
        if beats not in ("rpeak", "queries", "none"):
            raise ValueError(f"beats must be 'rpeak', 'queries' or 'none', got {beats!r}")
        kw = {**ENCODER_SIZES[encoder][size], **(encoder_kwargs or {})}
        if encoder == "resnet1d":
            self.encoder: nn.Module = ResNet1d(in_leads, **kw)
        else:
            self.encoder = ViT1d(in_leads, patch=patch, **kw)
        width = self.encoder.out_dim
        self.fs, self.beats, self.in_leads = float(fs), beats, in_leads
        self.output_dim, self.token_dim = embed_dim, token_dim
        if pool not in ("mean", "meanmax"):
            raise ValueError(f"pool must be 'mean' or 'meanmax', got {pool!r}")
        self.pool = pool
        self.proj = ProjectionHead(width * (2 if pool == "meanmax" else 1), embed_dim, proj)
        self.token_proj: nn.Module | None = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, token_dim))
        if beats == "rpeak":
            self.beat_proj: nn.Module = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        elif beats == "queries":
            self.beat_pool = AttentionalPooler(width, embed_dim, n_beat_queries, heads=4 if embed_dim % 4 == 0 else 1)
            self.beat_proj = nn.Linear(embed_dim, embed_dim)

    def set_required_outputs(self, required: set[str] | None) -> None:
        # No token-reading loss (MELP with the token level off): the token head would get no gradient.
        if required is not None and not required & {"tokens", "mask"}:
            self.token_proj = None

    def features(self, signal: Tensor) -> Tensor:
        """Encoder tokens ``[B, N, W]`` of ``signal`` ``[B, C, T]``."""
        if signal.ndim != 3 or signal.shape[1] != self.in_leads:
            raise ValueError(f"ECGTower expects [B, {self.in_leads}, T], got {tuple(signal.shape)}")
        return self.encoder(signal)

    def forward(self, x: Tensor | dict[str, Tensor]) -> TowerOutput:
        signal = x["signal"] if isinstance(x, dict) else x
        tokens = self.features(signal)
        pooled = tokens.mean(1) if self.pool == "mean" else torch.cat([tokens.mean(1), tokens.amax(1)], -1)
        emb = self.proj(pooled)
        extras: dict[str, Tensor] = {}
        if self.beats == "rpeak":
            rpeaks = x.get("rpeaks") if isinstance(x, dict) else None
            if rpeaks is None:
                rpeaks = self._detect(signal)
            n_b = max(1, int((rpeaks >= 0).sum(1).max()))  # drop all-padding beat columns
            beats, mask = pool_beats(tokens, rpeaks[:, :n_b], self.encoder.stride, self.fs,
                                     offset=float(self.encoder.offset))  # fmt: skip
            extras["beats"], extras["beat_mask"] = self.beat_proj(beats), mask
        elif self.beats == "queries":
            q = self.beat_pool(tokens)
            extras["beats"] = self.beat_proj(q)
            extras["beat_mask"] = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
        return TowerOutput(emb, None if self.token_proj is None else self.token_proj(tokens), None, extras)

    def _detect(self, signal: Tensor, max_beats: int = 40) -> Tensor:
        sig = signal.detach().float().cpu().numpy()
        out = np.full((sig.shape[0], max_beats), -1, dtype=np.int64)
        for i, s in enumerate(sig):
            r = detect_rpeaks(s, self.fs)[:max_beats]
            out[i, : len(r)] = r
        return torch.from_numpy(out).to(signal.device)


class ReportTower(TextTower):
    """The core text tower plus sentence embeddings for the beat-level loss.

    Sentences are split on text (:func:`vlp_core.text.split_sentences`), each is encoded by the same (cached,
    when frozen) encoder and projection. Extra args beyond :class:`vlp_core.towers.TextTower`:

    Args:
        max_sentences: sentences kept per report (S).

    Shapes:
        ``forward(texts)`` adds ``extras["sentences"] [B, S, D]`` and ``extras["sentence_mask"] [B, S]``.
    """

    def __init__(
        self,
        model_path: str | None = None,
        embed_dim: int | None = 256,
        proj: str = "linear",
        pooling: str = "mean",
        max_length: int = 128,
        freeze: bool = True,
        unfreeze_last_n: int = 0,
        cache_embeddings: bool = True,
        max_sentences: int = 8,
    ) -> None:
        super().__init__(model_path, embed_dim, proj, pooling, max_length, freeze, unfreeze_last_n,
                         cache_embeddings)  # fmt: skip
        self.max_sentences = max_sentences
        self._sentence_cache: dict[str, Tensor] = {}

    def _sentence_pooled(self, sentences: list[str]) -> tuple[list[str], Tensor]:
        """Pooled encoder states ``[S, H]`` of unique sentences (cached per sentence when the encoder is frozen)."""
        if not self.cache_embeddings:
            return sentences, self.encode_hidden(sentences)[0]
        missing = [s for s in sentences if s not in self._sentence_cache]
        if missing:
            pooled = self.encode_hidden(missing)[0].detach()
            for s, p in zip(missing, pooled):
                self._sentence_cache[s] = p
        return sentences, torch.stack([self._sentence_cache[s] for s in sentences])

    def forward(self, texts: Sequence[str]) -> TowerOutput:
        out = super().forward(texts)
        sents = [split_sentences(t)[: self.max_sentences] or [t] for t in texts]
        pooled = self._sentence_pooled(list(dict.fromkeys(s for ss in sents for s in ss)))
        s_max = max(len(ss) for ss in sents)
        # One gather instead of per-sentence copies: row index into `pooled` per (report, slot); -1 = padding.
        pos = {s: i for i, s in enumerate(pooled[0])}
        index = torch.full((len(texts), s_max), -1, dtype=torch.long)
        for i, ss in enumerate(sents):
            index[i, : len(ss)] = torch.tensor([pos[s] for s in ss])
        mask = (index >= 0).to(out.embedding.device)
        emb = self.proj(pooled[1])
        sentences = emb[index.clamp_min(0).to(emb.device)] * mask[..., None].to(emb.dtype)
        out.extras["sentences"], out.extras["sentence_mask"] = sentences, mask
        return out


class MELP(Pretrainer):
    """The MELP model as a core :class:`~vlp_core.training.Pretrainer` built from a few plain settings (YAML-friendly).

    Loss terms (a weight of 0 drops the term): ``rhythm`` (core ClipLoss, ECG rhythm embedding vs report
    embedding), ``token`` (captioning, :class:`~vlp_core.losses.CaptionLoss`), ``beat`` (GLoRIA local alignment of
    beats and report sentences, :class:`~vlp_core.losses.LocalAlignmentLoss`). Default weights follow MELP:
    rhythm 1.0, token 2.0, beat 0.2. ``save_pretrained`` writes a plain Pretrainer config (towers + losses), so
    ``Pretrainer.from_pretrained`` rebuilds it without this class's arguments.

    Args:
        encoder, size, fs, embed_dim, token_dim, beats, patch: see :class:`ECGTower`.
        text_model: local HF model folder (default: packaged all-MiniLM-L6-v2).
        text_freeze / text_unfreeze_last_n / text_max_length: text tower settings.
        weights: ``{"rhythm": w, "token": w, "beat": w}``.
        decoder_layers / decoder_heads: caption decoder size.
        max_captions: captioned samples per batch (see :class:`~vlp_core.losses.CaptionLoss`).
        lr, weight_decay, warmup_steps, max_steps: optimiser settings (see Pretrainer).
        lr_multipliers: per-prefix LR factors, e.g. ``{"towers.text.encoder": 0.05}`` for unfrozen text blocks.
    """

    def __init__(
        self,
        encoder: str = "resnet1d",
        size: str = "small",
        fs: float = 100.0,
        embed_dim: int = 128,
        token_dim: int = 128,
        beats: str = "rpeak",
        text_model: str | None = None,
        text_freeze: bool = True,
        text_unfreeze_last_n: int = 0,
        text_max_length: int = 64,
        weights: dict[str, float] | None = None,
        decoder_layers: int = 2,
        decoder_heads: int = 4,
        max_captions: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        max_steps: int | None = None,
        patch: int = 10,
        lr_multipliers: dict[str, float] | None = None,
    ) -> None:
        w = {"rhythm": 1.0, "token": 2.0, "beat": 0.2, **(weights or {})}
        unknown = set(w) - {"rhythm", "token", "beat"}
        if unknown:
            raise KeyError(f"unknown MELP loss weight(s) {sorted(unknown)}; use rhythm, token, beat")
        use_beats = beats if w["beat"] > 0 else "none"
        ecg = ECGTower(encoder, size, 12, fs, embed_dim, token_dim, use_beats, patch=patch)
        text = ReportTower(text_model, embed_dim, "linear", "mean", text_max_length, text_freeze, text_unfreeze_last_n)
        terms = []
        if w["rhythm"] > 0:
            terms.append(LossTerm("rhythm", ClipLoss(), w["rhythm"], inputs=("ecg", "text")))
        if w["token"] > 0:
            vocab = len(text.tokenizer)
            pad = int(text.tokenizer.pad_token_id or 0)
            terms.append(LossTerm("token", CaptionLoss(vocab, token_dim, decoder_layers, decoder_heads, pad_id=pad,
                                                       max_length=text_max_length, max_captions=max_captions,
                                                       source="ecg", text="text"),
                                  w["token"]))  # fmt: skip
        if w["beat"] > 0 and beats != "none":
            beat_inputs = (
                "ecg.extras.beats",
                "ecg.extras.beat_mask",
                "text.extras.sentences",
                "text.extras.sentence_mask",
            )
            terms.append(LossTerm("beat", LocalAlignmentLoss(), w["beat"], inputs=beat_inputs))
        if not terms:
            raise ValueError("all MELP loss weights are zero")
        super().__init__({"ecg": ecg, "text": text}, terms, lr=lr, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, max_steps=max_steps, lr_multipliers=lr_multipliers)  # fmt: skip

    def config(self) -> dict[str, Any]:
        """A plain :class:`~vlp_core.training.Pretrainer` config (towers, losses, optimiser settings)."""
        import inspect

        cfg = super().config()
        allowed = set(inspect.signature(Pretrainer.__init__).parameters) - {"self"}
        cfg["class_path"] = f"{Pretrainer.__module__}.{Pretrainer.__qualname__}"
        cfg["init_args"] = {k: v for k, v in cfg["init_args"].items() if k in allowed}
        return cfg


def load_model(path: str, trust_code: bool = False) -> Pretrainer:
    """Load a model from a ``save_pretrained`` folder or a Lightning ``.ckpt`` of a vlp run, without running code.

    A ``.ckpt`` goes through :meth:`~vlp_core.training.VlpModule.from_checkpoint` (``torch.load(weights_only=True)``,
    rebuilt from its ``vlp_config`` JSON through the allow-listed config path); checkpoints written before
    ``vlp_config`` existed are rebuilt as :class:`MELP` from their hyper-parameters. The model is in eval mode.

    Args:
        path: a ``save_pretrained`` folder or a ``.ckpt`` file.
        trust_code: allow the config to name classes outside vlp's allow-list (only for files you trust like code).

    Raises:
        ValueError: the checkpoint holds pickled objects other than tensors and plain data.
        UnsafeConfigError: its config names a class outside the allow-list.
    """
    import os

    if os.path.isdir(path):
        return Pretrainer.from_pretrained(path, trust_code=trust_code)
    if path.endswith(".ckpt") and os.path.isfile(path):
        return Pretrainer.from_checkpoint(path, trust_code=trust_code, legacy=_melp_from_hyper_parameters)
    raise FileNotFoundError(f"{path}: expected a save_pretrained folder or a Lightning .ckpt file")


def _melp_from_hyper_parameters(ckpt: Any) -> MELP:
    """A checkpoint written before ``vlp_config`` existed: MELP from its (plain-data) hyper-parameters."""
    import inspect

    allowed = set(inspect.signature(MELP.__init__).parameters) - {"self"}
    return MELP(**{k: v for k, v in dict(ckpt.get("hyper_parameters", {})).items() if k in allowed})


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def resnet1d_tower(size: str = "base", **kwargs: Any) -> ECGTower:
    """Registry constructor ``ecg/resnet1d``: :class:`ECGTower` with a 1-D ResNet encoder."""
    return ECGTower("resnet1d", size, **kwargs)


def vit1d_tower(size: str = "base", **kwargs: Any) -> ECGTower:
    """Registry constructor ``ecg/vit1d``: :class:`ECGTower` with a patch-transformer encoder."""
    return ECGTower("vit1d", size, **kwargs)
