"""Which space a configuration embeds into, and the backend that embeds for a space.

``EMBEDDING_BACKEND`` / ``EMBEDDING_MODEL`` (and friends) name the installation's *default* space: the one new
collections start on. Changing them creates (or selects) another space; collections already on the old one
keep searching it, with a backend built from the space's own row, until they are migrated (documents.spaces).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import transaction

from documents import embeddings
from documents.embeddings import EmbeddingBackend, HashingBackend
from documents.embeddings.local import LOCAL_MODEL_SHA256, LocalModelBackend
from documents.models import Distance, EmbeddingSpace
from documents.spaces import storage

_default_ids: dict[tuple, int] = {}
_default_spaces: dict[tuple, EmbeddingSpace] = {}


def _configuration() -> tuple:
    return (
        settings.EMBEDDING_BACKEND,
        settings.EMBEDDING_MODEL,
        settings.EMBEDDING_MODEL_PATH,
        settings.EMBEDDING_DIMENSIONS,
        bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL),
    )


def describe(backend: EmbeddingBackend, choice: str) -> dict:
    """The fields of the space ``backend`` (built for the configured ``choice``) embeds into."""
    if isinstance(backend, HashingBackend):
        kind, fingerprint = EmbeddingSpace.Backend.HASHING, ""
    elif isinstance(backend, LocalModelBackend):
        kind, fingerprint = EmbeddingSpace.Backend.LOCAL, "sha256:" + LOCAL_MODEL_SHA256["model.onnx"]
    elif choice == "openai":
        kind, fingerprint = EmbeddingSpace.Backend.OPENAI, backend.model_name
    else:
        kind, fingerprint = EmbeddingSpace.Backend.FASTEMBED, settings.EMBEDDING_MODEL_PATH or backend.model_name
    return {
        "backend": kind,
        "model": backend.model_name,
        "fingerprint": fingerprint,
        "dimensions": backend.dimensions,
        "model_path": settings.EMBEDDING_MODEL_PATH if kind == EmbeddingSpace.Backend.FASTEMBED else "",
    }


def space_name(fields: dict) -> str:
    """A readable slug: backend, model and dimensions, e.g. ``local-sentence-transformers-all-minilm-l6-v2-384``."""
    parts = [fields["backend"], *re.sub(r"[^a-z0-9]+", "-", fields["model"].lower()).strip("-")[:60].split("-")]
    parts = [part for index, part in enumerate(parts) if part and part not in parts[:index]]  # "hashing-384"
    if str(fields["dimensions"]) not in parts:
        parts.append(str(fields["dimensions"]))
    return "-".join(parts)


def default_space() -> EmbeddingSpace:
    """The space the configured backend embeds into, created (with its partition and index) on first use."""
    key = _configuration()
    space_id = _default_ids.get(key)
    if space_id is not None:
        space = EmbeddingSpace.objects.filter(pk=space_id).exclude(status=EmbeddingSpace.Status.RETIRED).first()
        if space is not None:
            _default_spaces[key] = space
            return space
    fields = describe(embeddings.get_backend(), embeddings.backend_choice())
    with transaction.atomic():
        space = (
            EmbeddingSpace.objects.filter(
                backend=fields["backend"],
                model=fields["model"],
                fingerprint=fields["fingerprint"],
                dimensions=fields["dimensions"],
            )
            .exclude(status=EmbeddingSpace.Status.RETIRED)
            .order_by("id")
            .first()
        )
        if space is None:
            name, suffix = space_name(fields), 1
            while EmbeddingSpace.objects.filter(name=name).exists():
                suffix += 1
                name = f"{space_name(fields)}-{suffix}"
            space = EmbeddingSpace.objects.create(
                name=name,
                status=EmbeddingSpace.Status.ACTIVE,
                chunking=chunking(),
                **fields,
            )
            storage.create_partition(space)
            # One partial index per distance, as the chunk table had: a collection of any distance (set by any
            # write path) finds its index, and an index with no rows of its distance costs nothing.
            for distance in Distance.values:
                storage.create_index(space, distance)
    _default_ids[key] = space.pk
    _default_spaces[key] = space
    return space


def known_default() -> EmbeddingSpace | None:
    """The default space as this process last found it for the current configuration (None: not yet), unchecked."""
    return _default_spaces.get(_configuration())


def chunking() -> dict:
    """How chunks are cut now, recorded on a space created now."""
    return {"size_tokens": settings.CHUNK_SIZE_TOKENS, "overlap_tokens": settings.CHUNK_OVERLAP_TOKENS}


def backend_for(space: EmbeddingSpace) -> EmbeddingBackend:
    """The backend that embeds queries and chunks for ``space`` (built once per process and space)."""
    return embeddings.build_backend(space.backend, space.model, space.model_path, space.dimensions)


def can_embed(space: EmbeddingSpace) -> bool:
    """Whether this process can build ``space``'s backend (for the heartbeat: a switch needs every process to)."""
    try:
        backend = backend_for(space)
    except Exception:  # any failure to load is the answer
        return False
    return backend.dimensions == space.dimensions
