"""Embedding spaces' storage: the default space, a partition per space with its own dimensions, retiring one."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from documents.models import Collection, EmbeddingSpace
from documents.spaces import backend_for, default_space, storage


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user("spaces-owner", password="x")


def _indexes(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [table])
        return [row[0] for row in cursor.fetchall()]


def test_a_new_collection_starts_on_the_configured_default_space(owner):
    collection = Collection.objects.create(owner=owner, name="Notes")
    space = collection.active_space
    assert space == default_space()
    assert (space.backend, space.model, space.dimensions) == ("hashing", "hashing-384", 384)
    assert space.name == "hashing-384"
    assert storage.partition_exists(space)
    hnsw = [definition for definition in _indexes(storage.partition_name(space)) if "hnsw" in definition]
    assert len(hnsw) == 3 and all("vector(384)" in definition for definition in hnsw)  # one per distance
    assert "vector_cosine_ops" in " ".join(hnsw) and "WHERE ((distance)::text = 'cosine'::text)" in " ".join(hnsw)
    assert Collection.objects.create(owner=owner, name="Other").active_space == space  # one default, reused


def test_spaces_of_other_dimensions_live_side_by_side_and_retire_alone(owner, transactional_db):
    first = default_space()
    second = EmbeddingSpace.objects.create(name="hashing-64", backend="hashing", model="hashing-64", dimensions=64)
    storage.create_partition(second)
    collection = Collection.objects.create(owner=owner, name="Mixed")
    document = collection.documents.create(owner=owner, title="d", sha256="0" * 64)
    chunk = document.chunks.create(collection=collection, ordinal=0, text="alpha beta")
    with connection.cursor() as cursor:
        for space in (first, second):
            vector = backend_for(space).embed_query("alpha beta")
            assert vector.shape == (space.dimensions,)
            cursor.execute(
                "INSERT INTO documents_chunkvector (chunk_id, space_id, collection_id, document_id, embedding) "
                "VALUES (%s, %s, %s, %s, %s::vector)",
                [chunk.pk, space.pk, collection.pk, document.pk, str(vector.tolist())],
            )
        # Each row went to its own space's partition.
        cursor.execute(f"SELECT count(*) FROM {storage.partition_name(second)}")
        assert cursor.fetchone()[0] == 1
        # A vector of the wrong length for a space's index is refused, with the index's own cast.
        storage.create_index(second, "cosine", concurrently=True)
        with pytest.raises(Exception, match="expected 64 dimensions"):
            cursor.execute(
                "INSERT INTO documents_chunkvector (chunk_id, space_id, collection_id, document_id, embedding) "
                "VALUES (%s, %s, %s, %s, %s::vector)",
                [chunk.pk + 1, second.pk, collection.pk, document.pk, str(np.ones(3).tolist())],
            )
    storage.drop_partition(second)
    assert not storage.partition_exists(second)
    with connection.cursor() as cursor:
        cursor.execute("SELECT space_id, count(*) FROM documents_chunkvector GROUP BY space_id")
        assert cursor.fetchall() == [(first.pk, 1)]
    # Deleting the chunk deletes its vectors (ON DELETE CASCADE).
    chunk.delete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM documents_chunkvector")
        assert cursor.fetchone()[0] == 0
