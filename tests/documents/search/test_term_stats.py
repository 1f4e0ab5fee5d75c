"""The BM25 statistics kept by triggers: document frequency per word and collection, chunk and token totals."""

import pytest
from django.db import connection

from documents import pipeline, services
from documents.models import Chunk, Collection, TermStat
from tests.documents_factory import add_text_document as add
from tests.term_statistics import assert_statistics_exact

pytestmark = pytest.mark.django_db




def df(collection, lexeme):
    stat = TermStat.objects.filter(collection=collection, lexeme=lexeme).first()
    return stat.df if stat else 0


def totals(collection):
    collection.refresh_from_db()
    return collection.chunk_total, collection.token_total


def recomputed(collection):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT u.lexeme, count(*) FROM documents_chunk c, unnest(c.search_vector) u "
            "WHERE c.collection_id = %s GROUP BY 1", [collection.pk])
        return dict(cursor.fetchall())


def test_storing_counts_each_word_once_per_chunk_and_the_totals(user, collection):
    add(user, collection, "a", "Lighthouses and lighthouse keepers.")
    add(user, collection, "b", "A lighthouse in the storm.")
    assert df(collection, "lighthous") == 2 and df(collection, "storm") == 1
    tokens = sum(Chunk.objects.filter(collection=collection).values_list("token_count", flat=True))
    assert totals(collection) == (2, tokens)


def test_reingest_and_delete_keep_the_statistics_exact(user, collection):
    a = add(user, collection, "a", "Volcanoes erupt lava. " * 200)
    b = add(user, collection, "b", "Glaciers carve valleys; volcanoes sleep.")
    pipeline.document_ingest(document_id=a.pk)  # replaces its chunks
    stats = {s.lexeme: s.df for s in TermStat.objects.filter(collection=collection) if s.df}
    assert stats == recomputed(collection)
    services.document_delete(document=a)
    stats = {s.lexeme: s.df for s in TermStat.objects.filter(collection=collection) if s.df}
    assert stats == recomputed(collection) and df(collection, "lava") == 0
    assert totals(collection) == (b.chunk_count, b.chunks.get().token_count)


def test_collections_are_counted_apart_and_deleting_one_takes_its_statistics(user, collection):
    other = Collection.objects.create(name="Other", owner=user)
    add(user, collection, "a", "Bees dance.")
    add(user, other, "b", "Bees buzz.")
    assert df(collection, "bee") == 1 and df(other, "bee") == 1
    other.delete()
    assert not TermStat.objects.filter(collection_id=other.pk).exists() and df(collection, "bee") == 1


def test_updating_chunks_moves_their_statistics(user, collection):
    other = Collection.objects.create(name="Other", owner=user)
    a = add(user, collection, "a", "Owls hunt at night.")
    add(user, collection, "b", "Owls sleep by day.")
    Chunk.objects.filter(document=a).update(text="Foxes hunt at dusk.")  # search_vector is recomputed
    assert df(collection, "owl") == 1 and df(collection, "fox") == 1
    Chunk.objects.filter(document=a).update(collection=other)
    assert df(collection, "fox") == 0 and df(other, "fox") == 1
    Chunk.objects.filter(document=a).update(distance="l2")  # counts nothing: the statistics stay
    assert_statistics_exact()
