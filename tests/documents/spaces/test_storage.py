"""Embedding spaces' storage: the default space, a partition per space with its own dimensions, retiring one."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from documents.models import Collection, EmbeddingSpace
from documents.search import Filters, search
from documents.spaces import backend_for, default_space, storage
from tests.documents_factory import add_text_document


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


def test_changing_the_configured_model_gives_new_collections_a_new_space_and_breaks_no_search(owner, settings):
    """EMBEDDING_* name the default space: a change creates (or selects) another one; collections already on the old
    space keep searching it, their queries embedded by its own model, and the two are searched together."""
    before = Collection.objects.create(owner=owner, name="Before")
    add_text_document(owner, before, "lighthouse", "The lighthouse keeper lit the lamp at dusk.")
    settings.EMBEDDING_DIMENSIONS = 64  # another model: hashing-64
    after = Collection.objects.create(owner=owner, name="After")
    assert after.active_space != before.active_space
    assert (after.active_space.name, after.active_space.dimensions) == ("hashing-64", 64)
    add_text_document(owner, after, "orchard", "The orchard keeper picked the apples at dusk.")
    before.refresh_from_db()
    assert before.active_space.dimensions == 384  # not moved: it still searches its own vectors
    found = {hit.document_title for hit in search(user=owner, query="keeper at dusk", k=5, mode="vector")}
    assert found == {"lighthouse", "orchard"}
    only_before = Filters(collections=(before.pk,))
    lighthouse = search(user=owner, query="lighthouse lamp", k=1, mode="vector", filters=only_before)
    assert [hit.document_title for hit in lighthouse] == ["lighthouse"]
    settings.EMBEDDING_DIMENSIONS = 384  # and back: the first space is selected again, not created anew
    assert Collection.objects.create(owner=owner, name="Again").active_space == before.active_space
