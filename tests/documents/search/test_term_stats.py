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
    Chunk.objects.filter(document=a).update(page=3)  # counts nothing: the statistics stay
    assert_statistics_exact()


def test_one_copy_into_two_collections_then_one_delete_keep_the_statistics_exact(user, collection):
    """The store's COPY path with rows of two collections in one statement, accented words (whose byte
    order differs from a locale's), and words already counted: the insert and delete triggers."""
    from psycopg.types.json import Jsonb

    from documents.store import copy_chunk_rows

    other = Collection.objects.create(name="Other", owner=user)
    a = add(user, collection, "a", "Crème brûlée and café au lait.")
    b = add(user, other, "b", "Zebras, émeus and Ångström units.")
    texts = {a: ["Émeus drink café noir.", "Zebras eat crème."], b: ["Café in Ørsted; émeus again.", "Über zebras."]}
    copy_chunk_rows(
        (document.pk, document.collection_id, ordinal, text, 1, "", 0, len(text), 5, Jsonb({}))
        for document, rows in texts.items() for ordinal, text in enumerate(rows, start=1)
    )
    assert df(collection, "émeus") == 1 and df(other, "émeus") == 2 and df(collection, "café") == 2
    assert_statistics_exact()
    Chunk.objects.filter(ordinal__gte=1).delete()
    assert df(other, "émeus") == 1 and df(collection, "émeus") == 0 and df(collection, "café") == 1
    assert_statistics_exact()
