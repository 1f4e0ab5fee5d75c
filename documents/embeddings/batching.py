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
    """Embed ``texts`` in batches of texts alike in length, reporting ``(done, total)`` after each.

    The rows come back in the order of ``texts``; the requests go shortest first, over the whole call: a
    local model pads each batch to its longest text, and sorting only within each request's 64 texts left
    16% of the tokens padding on the chunks of 300 SciFact abstracts run together, against 4% sorted across them.
    Characters stand for tokens here (the local backend sorts each request by its tokens again).
    """
    total = len(texts)
    if getattr(backend, "batches_by_tokens", False) and total:  # a backend of another make may not say
        # The whole call at once: sorted by exact tokens over all of it, no batch cut short at a request's end
        # (one call and requests of 64 texts, same process, interleaved: 26.2 vs 29.3 CPU seconds for 350 chunks).
        whole = backend.embed_with_progress(texts, None if on_batch is None else lambda done: on_batch(done, total))
        if whole.shape != (total, backend.dimensions):
            raise EmbeddingError(detail="The embedding model returned a malformed answer.")
        return whole
    size = max(1, min(batch_size or settings.EMBEDDING_BATCH_SIZE, backend.max_batch, MAX_BATCH))
    order = sorted(range(total), key=lambda index: len(texts[index]))
    vectors: np.ndarray | None = None
    for start in range(0, total, size):
        rows = order[start : start + size]
        part = backend.embed_documents([texts[index] for index in rows])
        if part.ndim != 2 or part.shape[0] != len(rows):
            raise EmbeddingError(detail="The embedding service returned a malformed answer.")
        if part.shape[1] != backend.dimensions:
            check_dimension(backend, produced=part.shape[1])
        if vectors is None:  # float32 from the start: no list of parts joined (and copied) at the end
            vectors = np.empty((total, part.shape[1]), dtype=np.float32)
        vectors[rows] = part
        if on_batch is not None:
            on_batch(min(start + size, total), total)
    if vectors is None:
        return np.zeros((0, backend.dimensions), dtype=np.float32)
    return vectors
