"""A document's chunks follow its collection and metadata, and the BM25 statistics follow its chunks.

Chunks copy their document's collection (access control and collection filters are a predicate on
the chunk table alone), its collection's distance (which partial HNSW index they join) and the
document's metadata (tag filters). These triggers keep the copies true for every write path — the
admin, QuerySet.update(), raw SQL — in the statement that changes the document:

- documents_document AFTER UPDATE OF collection_id, metadata (per row, only when one changed) moves
  the document's chunks;
- documents_chunk AFTER UPDATE (per statement, as the insert and delete triggers of 0003) moves the
  term statistics and collection totals of every chunk whose collection, words or length changed.
"""

from django.db import migrations

# The chunks an UPDATE statement changed in a way the statistics count (a distance change moves none):
# each as its old side (sign -1) and its new side (+1). The FULL JOIN on id also counts a row whose id
# changed, as a removal and an insertion.
CHANGED = """
    SELECT side.collection_id, side.search_vector, side.token_count, side.sign
    FROM old_rows o FULL JOIN new_rows n ON n.id = o.id,
    LATERAL (VALUES (o.collection_id, o.search_vector, o.token_count, -1),
                    (n.collection_id, n.search_vector, n.token_count, 1)) AS side (collection_id, search_vector, token_count, sign)
    WHERE side.collection_id IS NOT NULL
      AND (o.id IS NULL OR n.id IS NULL OR (o.collection_id, o.search_vector, o.token_count)
           IS DISTINCT FROM (n.collection_id, n.search_vector, n.token_count))
"""

TRIGGERS = f"""
CREATE FUNCTION documents_chunk_stats_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- As the insert and delete triggers of 0003: the words first, then the totals, each in one statement
    -- that takes its rows in key order, so that concurrent writers wait for each other instead of deadlocking.
    INSERT INTO documents_termstat (collection_id, lexeme, df)
    SELECT d.collection_id, u.lexeme, sum(d.sign) FROM ({CHANGED}) d, unnest(d.search_vector) u
    GROUP BY 1, 2 HAVING sum(d.sign) <> 0 ORDER BY 1, 2
    ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = documents_termstat.df + EXCLUDED.df;
    WITH s AS MATERIALIZED (
        SELECT d.collection_id, sum(d.sign) AS n, sum(d.sign * d.token_count) AS t FROM ({CHANGED}) d GROUP BY 1
    ), locked AS (
        SELECT c.id, s.n, s.t FROM documents_collection c JOIN s ON s.collection_id = c.id
        WHERE s.n <> 0 OR s.t <> 0 ORDER BY c.id FOR NO KEY UPDATE OF c
    )
    UPDATE documents_collection c SET chunk_total = c.chunk_total + l.n, token_total = c.token_total + l.t
    FROM locked l WHERE c.id = l.id;
    RETURN NULL;
END $$;

CREATE TRIGGER documents_chunk_stats_update AFTER UPDATE ON documents_chunk
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION documents_chunk_stats_update();

CREATE FUNCTION documents_document_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents_chunk c SET collection_id = NEW.collection_id, distance = g.distance, metadata = NEW.metadata
    FROM documents_collection g
    WHERE g.id = NEW.collection_id AND c.document_id = NEW.id
      AND (c.collection_id, c.distance, c.metadata) IS DISTINCT FROM (NEW.collection_id, g.distance, NEW.metadata);
    RETURN NULL;
END $$;

CREATE TRIGGER documents_document_chunks_follow AFTER UPDATE OF collection_id, metadata ON documents_document
    FOR EACH ROW
    WHEN (OLD.collection_id IS DISTINCT FROM NEW.collection_id OR OLD.metadata IS DISTINCT FROM NEW.metadata)
    EXECUTE FUNCTION documents_document_chunks_follow();

-- Copies that went stale before this migration (the statistics follow, by the trigger above).
UPDATE documents_chunk c SET collection_id = d.collection_id, distance = g.distance, metadata = d.metadata
FROM documents_document d JOIN documents_collection g ON g.id = d.collection_id
WHERE c.document_id = d.id
  AND (c.collection_id, c.distance, c.metadata) IS DISTINCT FROM (d.collection_id, g.distance, d.metadata);
"""

DROP_TRIGGERS = """
DROP TRIGGER documents_document_chunks_follow ON documents_document;
DROP FUNCTION documents_document_chunks_follow();
DROP TRIGGER documents_chunk_stats_update ON documents_chunk;
DROP FUNCTION documents_chunk_stats_update();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("documents", "0004_document_cancelled_attempts"),
    ]

    operations = [
        migrations.RunSQL(TRIGGERS, DROP_TRIGGERS),
    ]
