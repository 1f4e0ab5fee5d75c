"""Which backend embeds: the one ``EMBEDDING_BACKEND`` names (``BACKENDS``), built once per configuration."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypedDict

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from documents.embeddings.base import EmbeddingBackend
from documents.embeddings.fastembed import DEFAULT_FASTEMBED_MODEL, FastembedBackend
from documents.embeddings.hashing import HashingBackend
from documents.embeddings.local import LocalModelBackend, ModelVerificationError
from documents.embeddings.openai import DEFAULT_OPENAI_MODEL, OpenAIBackend

logger = logging.getLogger(__name__)

# A builder makes a backend from (model, model path, dimensions, fastembed's cache folder).
Builder = Callable[[str, str, int, Path], EmbeddingBackend]


def _hashing(model: str, path: str, dimensions: int, cache_dir: Path) -> EmbeddingBackend:
    return HashingBackend(dimensions)


def _openai(model: str, path: str, dimensions: int, cache_dir: Path) -> EmbeddingBackend:
    return OpenAIBackend(model or DEFAULT_OPENAI_MODEL, dimensions)


def _fastembed(model: str, path: str, dimensions: int, cache_dir: Path) -> EmbeddingBackend:
    return FastembedBackend(model or DEFAULT_FASTEMBED_MODEL, path, dimensions, cache_dir)


def _local(model: str, path: str, dimensions: int, cache_dir: Path) -> EmbeddingBackend:
    return LocalModelBackend(dimensions=dimensions, batch_tokens=settings.EMBEDDING_BATCH_TOKENS,
                             threads=settings.EMBEDDING_THREADS)


def _auto(model: str, path: str, dimensions: int, cache_dir: Path) -> EmbeddingBackend:
    # auto without OpenAI: a model the operator named through fastembed, else the installed local model.
    # A model file that fails verification stops here (ModelVerificationError): it is never replaced
    # silently; only a model that is absent falls back, loudly, to hashing.
    try:
        if model or path:
            return _fastembed(model, path, dimensions, cache_dir)
        return _local(model, path, dimensions, cache_dir)
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


# EMBEDDING_BACKEND's values; ``auto`` is resolved to ``openai`` when OpenAI is configured (``backend_choice``).
BACKENDS: dict[str, Builder] = {
    "auto": _auto,
    "openai": _openai,
    "local": _local,
    "fastembed": _fastembed,
    "hashing": _hashing,
}


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
    return BACKENDS[choice](model, path, dimensions, Path(cache_dir))


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


def build_backend(choice: str, model: str, path: str, dimensions: int) -> EmbeddingBackend:
    """The backend ``choice`` (one of BACKENDS but ``auto``) for that model, built once per process: an embedding
    space's own (documents.spaces), whatever the configuration says now."""
    if choice not in BACKENDS or choice == "auto":
        named = ", ".join(name for name in BACKENDS if name != "auto")
        raise ImproperlyConfigured(f"an embedding space's backend must be one of {named}, not {choice!r}")
    client_options = (
        (settings.OPENAI_API_KEY, settings.EMBEDDING_TIMEOUT_SECONDS, settings.EMBEDDING_MAX_RETRIES)
        if choice == "openai" else (settings.EMBEDDING_BATCH_TOKENS, settings.EMBEDDING_THREADS)
    )
    return _build(choice, model, path, dimensions, settings.OPENAI_BASE_URL, str(settings.VAR_DIR / "models"),
                  client_options)


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
