"""The BM25 statistics recomputed from scratch, to compare with what the triggers keep."""

from __future__ import annotations

from django.db import connection

from documents.models import Collection, TermStat


def assert_statistics_exact() -> None:
    """Every collection's term frequencies and chunk and token totals are those of its chunks now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.collection_id, u.lexeme, count(*) FROM documents_chunk c, "
                       "unnest(c.search_vector) u GROUP BY 1, 2")
        words = {(collection, lexeme): df for collection, lexeme, df in cursor.fetchall()}
        cursor.execute("SELECT g.id, count(c.id), coalesce(sum(c.token_count), 0) FROM documents_collection g "
                       "LEFT JOIN documents_chunk c ON c.collection_id = g.id GROUP BY 1")
        totals = {collection: (n, tokens) for collection, n, tokens in cursor.fetchall()}
    assert {(s.collection_id, s.lexeme): s.df for s in TermStat.objects.exclude(df=0)} == words
    assert {c.pk: (c.chunk_total, c.token_total) for c in Collection.objects.all()} == totals
