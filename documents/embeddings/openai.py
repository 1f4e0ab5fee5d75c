"""``openai``: OpenAI, or any OpenAI-compatible server through ``OPENAI_BASE_URL`` (Ollama, vLLM, TEI,
LM Studio).

The official client retries rate limits, 5xx and timeouts with exponential backoff (and honours
``Retry-After``); other 4xx are not retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings

from core.text import provider_message
from documents.embeddings.base import EmbeddingBackend, _normalise
from documents.exceptions import EmbeddingError

DEFAULT_OPENAI_MODEL = "text-embedding-3-small"


class OpenAIBackend(EmbeddingBackend):
    """OpenAI's embeddings endpoint, or any server that speaks it."""

    def __init__(self, model: str, dimensions: int):
        import openai

        self.model_name = model
        self.dimensions = dimensions
        self.client = openai.OpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",  # local servers accept any key
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=settings.EMBEDDING_TIMEOUT_SECONDS,
            max_retries=settings.EMBEDDING_MAX_RETRIES,
        )
        # Only OpenAI's text-embedding-3 models can shorten their vectors on request.
        self._ask_dimensions = model.startswith("text-embedding-3")

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._ask_dimensions else {}
        try:
            response = self.client.embeddings.create(
                model=self.model_name, input=list(texts), encoding_format="float", **extra
            )
        except openai.APIStatusError as error:
            raise EmbeddingError(detail=(
                f"The embedding service refused the request (HTTP {error.status_code}: {provider_message(error)})."
            )) from error
        except openai.APITimeoutError as error:
            raise EmbeddingError(detail="The embedding service did not answer in time.") from error
        except openai.APIConnectionError as error:
            raise EmbeddingError(
                detail=f"The embedding service at {self.client.base_url} could not be reached."
            ) from error
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts):
            raise EmbeddingError(detail=f"The embedding service returned {len(data)} vectors for {len(texts)} texts.")
        return _normalise(np.array([item.embedding for item in data], dtype=np.float32))

