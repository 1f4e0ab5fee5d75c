"""Embedding backends behind one small interface.

- ``openai``: OpenAI, or any OpenAI-compatible server through ``OPENAI_BASE_URL`` (Ollama, vLLM,
  TEI, LM Studio). The official client retries rate limits, 5xx and timeouts with exponential
  backoff (and honours ``Retry-After``); other 4xx are not retried.
- ``fastembed``: a local ONNX model. The default model downloads on first use on a user's
  machine; ``EMBEDDING_MODEL_PATH`` loads a local folder offline.
- ``hashing``: deterministic feature hashing of words and word pairs. No dependencies and no
  semantics beyond shared words: for tests, and the loudly announced last resort.

Every backend produces ``EMBEDDING_DIMENSIONS``-long, L2-normalised float32 vectors, so that
cosine distance, inner product and L2 rank alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from documents.exceptions import DimensionMismatch, EmbeddingError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "openai", "fastembed", "hashing")
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
DEFAULT_FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# OpenAI accepts up to 2048 inputs per request; we stay at 1000 as the issue of record asks.
MAX_BATCH = 1000


class EmbeddingBackend:
    """What every backend offers: a name recorded on each chunk, a dimension, and two methods."""

    model_name: str
    dimensions: int
    max_batch: int = MAX_BATCH

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


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


class FastembedBackend(EmbeddingBackend):
    """A local ONNX model through fastembed (CPU; no PyTorch)."""

    max_batch = 256

    def __init__(self, model: str, path: str, dimensions: int, cache_dir: Path):
        from fastembed import TextEmbedding

        self.model_name = model
        kwargs = {"model_name": model, "cache_dir": str(cache_dir), "lazy_load": False,
                  "threads": settings.EMBEDDING_THREADS or None}
        if path:
            if not Path(path, "model.onnx").exists() and not Path(path, "onnx", "model.onnx").exists():
                raise ImproperlyConfigured(f"EMBEDDING_MODEL_PATH={path} holds no model.onnx.")
            _register_local_model(model, path, dimensions)
            kwargs.update(specific_model_path=path, local_files_only=True)
        try:
            self._model = TextEmbedding(**kwargs)
        except ValueError as error:
            raise ImproperlyConfigured(f"fastembed cannot load {model!r}: {error}") from error
        self.dimensions = int(self._model.embedding_size)
        self._truncate_like_sentence_transformers()

    def _truncate_like_sentence_transformers(self) -> None:
        """Cut inputs where the model was trained to (all-MiniLM-L6-v2: 256 word pieces, not 512).

        Longer inputs only cost time: the model never learned to use those positions.
        """
        inner = getattr(self._model, "model", None)
        model_dir = getattr(inner, "_model_dir", None)
        tokenizer = getattr(inner, "tokenizer", None)
        if model_dir is None or tokenizer is None:
            return
        config = Path(model_dir, "sentence_bert_config.json")
        try:
            limit = int(json.loads(config.read_text()).get("max_seq_length") or 0)
        except (OSError, ValueError):
            return
        if 0 < limit < (tokenizer.truncation or {}).get("max_length", limit + 1):
            tokenizer.enable_truncation(max_length=limit, direction=tokenizer.truncation.get("direction", "right"))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return _normalise(np.stack(list(self._model.embed(list(texts), batch_size=min(len(texts), 64)))))


def _register_local_model(model: str, path: str, dimensions: int) -> None:
    """Describe a model fastembed does not know, so that a local folder of it can load."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if any(m["model"].lower() == model.lower() for m in TextEmbedding.list_supported_models()):
        return
    model_file = "model.onnx" if Path(path, "model.onnx").exists() else "onnx/model.onnx"
    TextEmbedding.add_custom_model(
        model=model, pooling=PoolingType.MEAN, normalization=True,
        sources=ModelSource(hf=model), dim=dimensions, model_file=model_file,
    )


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
        extra = {"dimensions": self.dimensions} if self._ask_dimensions else {}
        try:
            response = self.client.embeddings.create(
                model=self.model_name, input=list(texts), encoding_format="float", **extra
            )
        except openai.APIStatusError as error:
            raise EmbeddingError(detail=(
                f"The embedding service refused the request (HTTP {error.status_code}: {_provider_message(error)})."
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


def _provider_message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)[:200].rstrip(".")
    return (str(getattr(error, "message", "")) or error.__class__.__name__)[:200].rstrip(".")


def backend_choice() -> str:
    """The backend ``EMBEDDING_BACKEND`` names, with ``auto`` resolved to OpenAI when configured."""
    choice = settings.EMBEDDING_BACKEND
    if choice not in BACKENDS:
        raise ImproperlyConfigured(f"EMBEDDING_BACKEND must be one of {', '.join(BACKENDS)}, not {choice!r}.")
    if choice == "auto" and (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL):
        return "openai"
    return choice


@cache
def _build(
    choice: str, model: str, path: str, dimensions: int, base_url: str, cache_dir: str, client_options: tuple = ()
) -> EmbeddingBackend:
    # ``client_options`` (the OpenAI key, timeout and retries) is only part of the cache key: the
    # OpenAI backend reads them from settings, and must be rebuilt when they change.
    if choice == "hashing":
        return HashingBackend(dimensions)
    if choice == "openai":
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL, dimensions)
    if choice == "fastembed":
        return FastembedBackend(model or DEFAULT_FASTEMBED_MODEL, path, dimensions, Path(cache_dir))
    # auto without OpenAI: the local model if it loads (downloading it once), else hashing.
    try:
        return FastembedBackend(model or DEFAULT_FASTEMBED_MODEL, path, dimensions, Path(cache_dir))
    except Exception as error:
        logger.error(
            "\n%s\nNO EMBEDDING MODEL COULD BE LOADED (%s).\nFalling back to the 'hashing' embeddings: search "
            "matches shared words only, with no understanding of meaning.\nSet OPENAI_API_KEY or "
            "OPENAI_BASE_URL, or EMBEDDING_MODEL_PATH to a local model folder.\n%s",
            "=" * 78, error, "=" * 78,
        )
        return HashingBackend(dimensions)


def get_backend() -> EmbeddingBackend:
    """The configured backend, built once per process and per configuration."""
    choice = backend_choice()
    client_options = (
        (settings.OPENAI_API_KEY, settings.EMBEDDING_TIMEOUT_SECONDS, settings.EMBEDDING_MAX_RETRIES)
        if choice == "openai" else ()
    )
    return _build(
        choice, settings.EMBEDDING_MODEL, settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_DIMENSIONS,
        settings.OPENAI_BASE_URL, str(settings.VAR_DIR / "models"), client_options,
    )


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
