"""Embedding many texts with a backend: in batches, each checked against the backend's dimensions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings

from documents.embeddings.base import MAX_BATCH, EmbeddingBackend
from documents.exceptions import DimensionMismatch, EmbeddingError


def check_dimension(backend: EmbeddingBackend, produced: int | None = None, expected: int | None = None) -> None:
    """Refuse, with what to do, vectors that do not fit where they go: ``expected`` long (by default, as long as
    the backend says its vectors are: an embedding space's dimensions, documents.spaces)."""
    produced = produced if produced is not None else backend.dimensions
    expected = expected if expected is not None else backend.dimensions
    if produced != expected:
        raise DimensionMismatch(detail=
            f"The embedding model “{backend.model_name}” produces {produced}-dimensional vectors, but its "
            f"embedding space stores {expected}-dimensional ones. Use a model with {expected} dimensions, or add "
            f"an embedding space of {produced} dimensions and migrate the collections to it "
            "(manage.py embedding_spaces)."
        )


def embed_in_batches(
    backend: EmbeddingBackend,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` in batches, reporting ``(done, total)`` after each."""
    size = max(1, min(batch_size or settings.EMBEDDING_BATCH_SIZE, backend.max_batch, MAX_BATCH))
    total = len(texts)
    parts = []
    for start in range(0, total, size):
        vectors = backend.embed_documents(texts[start : start + size])
        if vectors.ndim != 2 or vectors.shape[0] != len(texts[start : start + size]):
            raise EmbeddingError(detail="The embedding service returned a malformed answer.")
        if vectors.shape[1] != backend.dimensions:
            check_dimension(backend, produced=vectors.shape[1])
        parts.append(vectors)
        if on_batch is not None:
            on_batch(min(start + size, total), total)
    if not parts:
        return np.zeros((0, backend.dimensions), dtype=np.float32)
    return np.concatenate(parts)
