"""The interface every embedding backend implements, and what they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# OpenAI accepts up to 2048 inputs per request; we stay at 1000 as the issue of record asks.
MAX_BATCH = 1000


class EmbeddingBackend:
    """What every backend offers: a name recorded on each chunk, a dimension, and two methods.

    A backend sets ``model_name`` and ``dimensions`` and implements ``embed_documents``: L2-normalised
    float32 vectors, one row per text (``_normalise``), so that cosine, inner product and L2 rank alike.
    """

    model_name: str
    dimensions: int
    max_batch: int = MAX_BATCH
    # A backend that batches by tokens itself (the local model) is given a whole document in one call
    # (``embed_with_progress``): requests of EMBEDDING_BATCH_SIZE texts cut its token batches short at every
    # request's end, and sorted it only within each request (bench/ingest_speed.py).
    batches_by_tokens: bool = False

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement embed_documents(texts)")

    def embed_with_progress(self, texts: Sequence[str], on_rows: Callable[[int], None] | None) -> np.ndarray:
        """``embed_documents``, calling ``on_rows(rows done)`` as it goes (a backend that ``batches_by_tokens``)."""
        raise NotImplementedError(f"{type(self).__name__} does not batch by tokens")

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
