"""A space's chunk vectors: written by COPY, searched by HNSW or exactly, kept true by triggers, and migrated."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from documents.models import ChunkVector, Collection, EmbeddingSpace
from documents.spaces import default_space, storage
from documents.spaces.vectors import search_space, write_vectors


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user("vectors-owner", password="x")


def _unit(rng, n, dimensions):
    vectors = rng.standard_normal((n, dimensions)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _chunks(collection, owner, n, title="d"):
    document = collection.documents.create(owner=owner, title=title, sha256=title.ljust(64, "0"))
    return document, [document.chunks.create(collection=collection, ordinal=i, text=f"chunk {i}") for i in range(n)]


def test_vectors_written_by_copy_are_searched_in_their_space_only(owner):
    space = default_space()
    small = EmbeddingSpace.objects.create(name="hashing-8", backend="hashing", model="hashing-8", dimensions=8)
    storage.create_partition(small)
    storage.create_index(small, "cosine")
    collection = Collection.objects.create(owner=owner, name="Vectors")
    other = Collection.objects.create(owner=owner, name="Other")
    rng = np.random.default_rng(1)
    document, chunks = _chunks(collection, owner, 30)
    other_document, other_chunks = _chunks(other, owner, 5, "o")
    vectors, small_vectors = _unit(rng, 30, 384), _unit(rng, 30, 8)
    assert (
        write_vectors(
            space=space,
            rows=((c.pk, collection.pk, document.pk, "cosine", v) for c, v in zip(chunks, vectors, strict=True)),
        )
        == 30
    )
    write_vectors(
        space=space,
        rows=((c.pk, other.pk, other_document.pk, "cosine", v) for c, v in zip(other_chunks, vectors, strict=False)),
    )
    write_vectors(
        space=small,
        rows=((c.pk, collection.pk, document.pk, "cosine", v) for c, v in zip(chunks, small_vectors, strict=True)),
    )
    assert ChunkVector.objects.filter(space=space).count() == 35
    # Exact and HNSW agree on a small space; only the collections asked for are returned.
    exact = search_space(
        space=space, distance="cosine", vector=vectors[3], k=5, collection_ids=[collection.pk], exact=True
    )
    assert exact[0][0] == chunks[3].pk and exact[0][1] == pytest.approx(1.0, abs=1e-5)
    assert {chunk_id for chunk_id, _ in exact} <= {c.pk for c in chunks}
    hnsw = search_space(space=space, distance="cosine", vector=vectors[3], k=5, collection_ids=[collection.pk])
    assert [chunk_id for chunk_id, _ in hnsw] == [chunk_id for chunk_id, _ in exact]
    found = search_space(space=small, distance="cosine", vector=small_vectors[7], k=1, collection_ids=[collection.pk])
    assert found[0][0] == chunks[7].pk
    with pytest.raises(ValueError, match="8-dimensional"):
        write_vectors(space=small, rows=[(chunks[0].pk, collection.pk, document.pk, "cosine", vectors[0])])
    with pytest.raises(ValueError, match="384-dimensional"):
        search_space(space=space, distance="cosine", vector=small_vectors[0], k=1, collection_ids=[collection.pk])


def test_vectors_follow_their_document_and_their_collections_distance(owner):
    space = default_space()
    source = Collection.objects.create(owner=owner, name="Source")
    target = Collection.objects.create(owner=owner, name="Target", distance="l2")
    document, chunks = _chunks(source, owner, 3)
    write_vectors(
        space=space,
        rows=(
            (c.pk, source.pk, document.pk, "cosine", v)
            for c, v in zip(chunks, _unit(np.random.default_rng(2), 3, 384), strict=True)
        ),
    )
    document.collection = target
    document.save(update_fields=["collection"])
    assert set(ChunkVector.objects.values_list("collection_id", "distance")) == {(target.pk, "l2")}
    Collection.objects.filter(pk=target.pk).update(distance="ip")  # any write path: a trigger
    assert set(ChunkVector.objects.values_list("collection_id", "distance")) == {(target.pk, "ip")}
    # A chunk moved on its own (raw SQL) takes its vectors along too.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE documents_chunk SET collection_id = %s WHERE id = %s", [source.pk, chunks[0].pk])
    assert ChunkVector.objects.get(chunk_id=chunks[0].pk).collection_id == source.pk
    assert ChunkVector.objects.get(chunk_id=chunks[0].pk).distance == "cosine"


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_each_models_vectors_into_a_space_and_gives_every_collection_one(owner):
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("documents")
    executor.migrate([("documents", "0014_embedding_spaces")])
    try:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM documents_embeddingspace")
            cursor.execute(
                "INSERT INTO documents_collection (name, description, distance, owner_id, created_at, chunk_total, "
                "token_total) VALUES ('Old', '', 'l2', %s, now(), 0, 0), ('Empty', '', 'cosine', %s, now(), 0, 0) "
                "RETURNING id",
                [owner.pk, owner.pk],
            )
            old, empty = (row[0] for row in cursor.fetchall())
            cursor.execute(
                "INSERT INTO documents_document (owner_id, collection_id, title, file, original_filename, "
                "content_type, size, sha256, external_id, status, progress, stage, chunks_total, chunks_embedded, "
                "chunk_count, error, error_detail, attempts, metadata, created_at, updated_at) VALUES "
                "(%s, %s, 't', 'f', '', '', 0, 'x', '', 'ready', 1, '', 0, 0, 2, '', '', 0, '{}', now(), now()) "
                "RETURNING id",
                [owner.pk, old],
            )
            document = cursor.fetchone()[0]
            for ordinal, model in enumerate(["hashing-384", "hashing-384", "text-embedding-3-small"]):
                cursor.execute(
                    "INSERT INTO documents_chunk (document_id, collection_id, ordinal, text, heading, char_start, "
                    "char_end, token_count, metadata, embedding, embedding_model, distance) VALUES "
                    "(%s, %s, %s, 'x', '', 0, 0, 1, '{}', %s::vector, %s, 'l2')",
                    [document, old, ordinal, str([1.0 / (ordinal + 1)] + [0.0] * 383), model],
                )
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        spaces = {space.model: space for space in EmbeddingSpace.objects.all()}
        assert set(spaces) == {"hashing-384", "text-embedding-3-small"}
        assert (spaces["hashing-384"].backend, spaces["text-embedding-3-small"].backend) == ("hashing", "openai")
        # The configured backend (hashing, in the tests) is the one the old collection searches.
        collections = dict(Collection.objects.values_list("id", "active_space"))
        assert collections == {old: spaces["hashing-384"].pk, empty: spaces["hashing-384"].pk}
        assert default_space() == spaces["hashing-384"]
        rows = ChunkVector.objects.values_list("space__model", "collection_id", "document_id", "distance")
        assert sorted(rows) == sorted(
            [("hashing-384", old, document, "l2")] * 2 + [("text-embedding-3-small", old, document, "l2")]
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s", [storage.partition_name(spaces["hashing-384"])]
            )
            names = {row[0] for row in cursor.fetchall()}
        hashing = spaces["hashing-384"]
        assert {storage.index_name(hashing, "l2"), storage.index_name(hashing, "cosine")} <= names
    finally:
        Collection.objects.all().delete()
