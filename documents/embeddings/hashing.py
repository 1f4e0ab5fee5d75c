"""``hashing``: deterministic feature hashing of words and word pairs.

No dependencies and no semantics beyond shared words: for tests, and the loudly announced last resort.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from documents.embeddings.base import EmbeddingBackend, _normalise

WORD = re.compile(r"\w+", re.UNICODE)


class HashingBackend(EmbeddingBackend):
    """Signed feature hashing of lower-cased words and adjacent word pairs."""

    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self.model_name = f"hashing-{dimensions}"

    def _features(self, text: str) -> list[str]:
        words = [w[:40] for w in WORD.findall(text.lower())]
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                matrix[row, value % self.dimensions] += 1.0 if (value >> 63) & 1 else -1.0
        return _normalise(matrix)
