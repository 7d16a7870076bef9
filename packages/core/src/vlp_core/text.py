"""Text utilities shared by every domain: sentence splitting on text (never on tokenizer ids) with owner indices."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["sentences_with_owner", "split_sentences", "text_ids"]

_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences on ``.``, ``;``, ``!``, ``?`` followed by whitespace, and on newlines.

    Trailing ``.``/``;`` are stripped and empty pieces dropped; decimal numbers (``QRS 0.12 s``) stay whole because a
    split needs whitespace after the punctuation.

    Examples:
        >>> split_sentences("Sinus rhythm. LBBB; ST elevation.\\nNormal axis")
        ['Sinus rhythm', 'LBBB', 'ST elevation', 'Normal axis']
    """
    parts = _SENTENCE_END.split(str(text))
    out = []
    for p in parts:
        p = p.strip().rstrip(".;").strip()
        if p:
            out.append(p)
    return out


def sentences_with_owner(texts: Sequence[str], max_sentences: int | None = None) -> tuple[list[str], Tensor]:
    """Sentences of every text, flattened, with the index of the text each came from.

    Args:
        texts: ``B`` reports.
        max_sentences: keep at most this many sentences per text (``None`` = all). A text without any sentence
            contributes itself, so every owner appears at least once.

    Returns:
        ``(sentences, owner)``: ``M`` strings and a long tensor ``[M]`` with values in ``[0, B)``, in text order.
    """
    flat: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        sents = split_sentences(t)[:max_sentences] or [str(t)]
        flat.extend(sents)
        owner.extend([i] * len(sents))
    return flat, torch.tensor(owner, dtype=torch.long)


def text_ids(texts: Sequence[str]) -> Tensor:
    """Stable 63-bit ids of texts (BLAKE2b of the UTF-8 bytes), equal for equal texts in every process.

    Used as ``ids`` of :class:`~vlp_core.losses.MultiPositiveClipLoss`, so identical texts on different ranks are
    treated as positives instead of negatives. Python's ``hash`` is salted per process and cannot serve.

    Returns:
        Long tensor ``[len(texts)]``.
    """
    out = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") >> 1 for t in texts]
    return torch.tensor(out, dtype=torch.long)
