"""Pairwise similarity between embeddings: one small interface used by the losses, retrieval and zero-shot.

A :class:`Similarity` maps ``a [B, ...]`` and ``b [M, ...]`` to ``[B, M]`` similarities (before any logit scale).
Cosine similarity is the default everywhere. Similarities that are an inner product after a per-row transform
(cosine, dot) set ``is_inner_product = True`` and implement :meth:`Similarity.prepare`; the losses then keep their
fused and chunked matmul kernels. Any other similarity (e.g. a Hellinger similarity between Gaussian embeddings
``cat([mu, logvar], -1)``) only implements :meth:`Similarity.forward`, and every loss and metric accepts it
unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from vlp_core.config import Configurable

__all__ = ["CosineSimilarity", "DotSimilarity", "InnerProductSimilarity", "Similarity", "resolve_similarity"]


class Similarity(Configurable, nn.Module, ABC):
    """Base class: ``forward(a [B, ...], b [M, ...]) -> [B, M]``, larger = more similar.

    Subclasses implement :meth:`forward`. ``prepare`` (identity here) is applied to each side once before scoring;
    :meth:`pairwise` scores rows that were already prepared.
    """

    #: ``forward(a, b) == prepare(a) @ prepare(b).T``: lets losses use matmul kernels on prepared rows.
    is_inner_product: bool = False

    def prepare(self, x: Tensor) -> Tensor:
        """Per-row transform applied once before pairwise scoring (identity by default)."""
        return x

    @abstractmethod
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Similarities ``[B, M]`` of ``a [B, ...]`` and ``b [M, ...]``."""

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """Similarities of already prepared rows (``prepare`` is not applied again)."""
        return a @ b.T if self.is_inner_product else self(a, b)


class InnerProductSimilarity(Similarity):
    """``<prepare(a), prepare(b)>``; subclasses choose the per-row transform."""

    is_inner_product = True

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.prepare(a) @ self.prepare(b).T


class CosineSimilarity(InnerProductSimilarity):
    """Cosine similarity ``<a/|a|, b/|b|>`` (rejects NaN/Inf embeddings with a clear error)."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def prepare(self, x: Tensor) -> Tensor:
        from vlp_core.losses.functional import normalize

        return normalize(x, self.eps)


class DotSimilarity(InnerProductSimilarity):
    """Raw inner product ``<a, b>`` (for embeddings that are already normalised or deliberately unnormalised)."""

    def prepare(self, x: Tensor) -> Tensor:
        return x


def resolve_similarity(similarity: Similarity | None, normalize: bool = True) -> Similarity:
    """``similarity`` if given, else cosine (``normalize=True``) or dot product."""
    if similarity is not None:
        if not isinstance(similarity, Similarity):
            raise TypeError(f"similarity must be a vlp_core.similarity.Similarity, got {type(similarity).__name__}")
        return similarity
    return CosineSimilarity() if normalize else DotSimilarity()
