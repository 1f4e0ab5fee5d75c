"""Embedding many texts with a backend: in batches, each checked against the vector column's dimension."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings

from documents.embeddings.base import MAX_BATCH, EmbeddingBackend
from documents.exceptions import DimensionMismatch, EmbeddingError


def column_dimensions() -> int:
    """The dimension of the chunk table's vector column, fixed when it was migrated."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'documents_chunk'::regclass AND attname = 'embedding'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] > 0 else settings.EMBEDDING_DIMENSIONS


def check_dimension(backend: EmbeddingBackend, produced: int | None = None) -> None:
    """Refuse, with what to do, a model whose vectors do not fit the vector column."""
    produced = produced if produced is not None else backend.dimensions
    expected = column_dimensions()
    if produced != expected:
        raise DimensionMismatch(detail=
            f"The embedding model “{backend.model_name}” produces {produced}-dimensional vectors, but this "
            f"installation stores {expected}-dimensional ones. Use a model with {expected} dimensions, or set "
            f"EMBEDDING_DIMENSIONS={produced} on a new database and re-ingest the documents."
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
