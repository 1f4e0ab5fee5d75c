"""A collection in the middle of a migration, for lane D's tests (quality, command, API, admin).

The collection's documents and chunks are written with the ORM; each space's vectors are then written for every
chunk that lacks one (``fill``), embedded by the space's own backend, or noise (``noise=True``) to make a target
that is worse.
"""

from __future__ import annotations

import random

import numpy as np
from django.db import connection
from django.utils import timezone

from documents.models import Chunk, Collection, Document, EmbeddingSpace, SpaceMigration
from documents.spaces import backend_for, storage
from documents.spaces.vectors import write_vectors

VOCABULARY = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in ("ra", "mo", "ti", "lun", "vek")]


def sentence(draw: random.Random) -> str:
    return " ".join(draw.choice(VOCABULARY) for _ in range(14)).capitalize() + "."


def add_documents(user, collection: Collection, count: int = 30) -> list[Document]:
    """``count`` ready documents of made-up words, one chunk each, written with the ORM (no vectors: ``fill``)."""
    draw = random.Random(7)
    documents = []
    for number in range(count):
        text = " ".join(sentence(draw) for _ in range(3))
        document = Document.objects.create(
            owner=user,
            collection=collection,
            title=f"doc-{number}",
            sha256=f"{number:064x}",
            status=Document.Status.READY,
            chunk_count=1,
        )
        Chunk.objects.create(
            document=document,
            collection=collection,
            ordinal=0,
            text=text,
            char_end=len(text),
            token_count=len(text.split()),
        )
        documents.append(document)
    return documents


def space(name: str, dimensions: int, *, model: str | None = None, index: bool = True) -> EmbeddingSpace:
    """A hashing space with its partition (and its cosine HNSW index unless ``index`` is false)."""
    created = EmbeddingSpace.objects.create(
        name=name,
        backend="hashing",
        model=model or f"hashing-{dimensions}",
        dimensions=dimensions,
        status=EmbeddingSpace.Status.BUILDING,
    )
    storage.create_partition(created)
    if index:
        storage.create_index(created, "cosine")
    return created


def fill(collection: Collection, target: EmbeddingSpace, *, noise: bool = False, limit: int | None = None) -> int:
    """Write ``target``'s vectors for the collection's chunks that have none there; how many were written."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.id, c.document_id, c.text FROM documents_chunk c WHERE c.collection_id = %s AND NOT EXISTS "
            "(SELECT 1 FROM documents_chunkvector v WHERE v.chunk_id = c.id AND v.space_id = %s) ORDER BY c.id",
            [collection.pk, target.pk],
        )
        rows = cursor.fetchall()[:limit]
    if not rows:
        return 0
    if noise:
        generator = np.random.default_rng(3)
        vectors = generator.normal(size=(len(rows), target.dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    else:
        vectors = backend_for(target).embed_documents([text for _, _, text in rows])
    write_vectors(
        space=target,
        rows=[
            (chunk_id, collection.pk, document_id, collection.distance, vector)
            for (chunk_id, document_id, _), vector in zip(rows, vectors, strict=True)
        ],
    )
    return len(rows)


def migrating(collection: Collection, target: EmbeddingSpace, *, noise: bool = False, user=None) -> SpaceMigration:
    """An open migration of ``collection`` to ``target``, its backfill done (ready), both spaces filled."""
    source = collection.active_space
    assert source is not None  # every collection has one (Collection.save)
    fill(collection, source)
    fill(collection, target, noise=noise)
    Collection.objects.filter(pk=collection.pk).update(target_space=target)
    collection.refresh_from_db()
    total = Chunk.objects.filter(collection=collection).count()
    return SpaceMigration.objects.create(
        collection=collection,
        source=source,
        target=target,
        state=SpaceMigration.State.READY,
        chunks_total=total,
        chunks_done=total,
        started_by=user,
        backfilled_at=timezone.now(),
    )
