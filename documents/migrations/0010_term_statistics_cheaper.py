"""The BM25 statistics triggers do the same work for less (bench/ingest_store.py, 2026-12-01).

Storing a document of 50 chunks adds ~3,000 distinct words to the statistics: the insert trigger was
half of the store's time. Two changes, the statistics unchanged:

- the words come from ``tsvector_to_array`` instead of ``unnest(tsvector)``, which also builds every
  word's positions and weights, only to throw them away;
- the rows are taken in byte order (``COLLATE "C"``) instead of the database's collation: the sort
  that orders the locks (so that concurrent writers of one collection wait instead of deadlocking)
  no longer calls the locale's comparison. The three triggers keep one order, so they still never
  take the same rows in opposite orders.
"""

import re

from django.db import migrations

# As in migration 0005: the chunks an UPDATE statement changed in a way the statistics count.
CHANGED = """
    SELECT side.collection_id, side.search_vector, side.token_count, side.sign
    FROM old_rows o FULL JOIN new_rows n ON n.id = o.id,
    LATERAL (VALUES (o.collection_id, o.search_vector, o.token_count, -1),
                    (n.collection_id, n.search_vector, n.token_count, 1)) AS side (collection_id, search_vector, token_count, sign)
    WHERE side.collection_id IS NOT NULL
      AND (o.id IS NULL OR n.id IS NULL OR (o.collection_id, o.search_vector, o.token_count)
           IS DISTINCT FROM (n.collection_id, n.search_vector, n.token_count))
"""

FUNCTIONS = """
CREATE OR REPLACE FUNCTION documents_chunk_stats_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO documents_termstat (collection_id, lexeme, df)
    SELECT n.collection_id, u.lexeme, count(*) FROM new_rows n, unnest(tsvector_to_array(n.search_vector)) u (lexeme)
    GROUP BY 1, 2 ORDER BY 1, u.lexeme COLLATE "C"
    ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = documents_termstat.df + EXCLUDED.df;
    UPDATE documents_collection c SET chunk_total = c.chunk_total + s.n, token_total = c.token_total + s.t
    FROM (SELECT collection_id, count(*) AS n, sum(token_count) AS t FROM new_rows GROUP BY 1) s
    WHERE c.id = s.collection_id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION documents_chunk_stats_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Words whose count drops to 0 keep a row with df = 0: harmless, and cheaper than finding them.
    WITH removed AS (
        SELECT o.collection_id, u.lexeme, count(*) AS df
        FROM old_rows o, unnest(tsvector_to_array(o.search_vector)) u (lexeme) GROUP BY 1, 2
    ), locked AS (
        SELECT t.id, r.df FROM documents_termstat t JOIN removed r USING (collection_id, lexeme)
        ORDER BY t.collection_id, t.lexeme COLLATE "C" FOR UPDATE OF t
    )
    UPDATE documents_termstat t SET df = t.df - l.df FROM locked l WHERE t.id = l.id;
    UPDATE documents_collection c SET chunk_total = c.chunk_total - s.n, token_total = c.token_total - s.t
    FROM (SELECT collection_id, count(*) AS n, sum(token_count) AS t FROM old_rows GROUP BY 1) s
    WHERE c.id = s.collection_id;
    RETURN NULL;
END $$;
"""

UPDATE_FUNCTION = """
CREATE OR REPLACE FUNCTION documents_chunk_stats_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO documents_termstat (collection_id, lexeme, df)
    SELECT d.collection_id, u.lexeme, sum(d.sign) FROM ({changed}) d, unnest(tsvector_to_array(d.search_vector)) u (lexeme)
    GROUP BY 1, 2 HAVING sum(d.sign) <> 0 ORDER BY 1, u.lexeme COLLATE "C"
    ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = documents_termstat.df + EXCLUDED.df;
    WITH s AS MATERIALIZED (
        SELECT d.collection_id, sum(d.sign) AS n, sum(d.sign * d.token_count) AS t FROM ({changed}) d GROUP BY 1
    ), locked AS (
        SELECT c.id, s.n, s.t FROM documents_collection c JOIN s ON s.collection_id = c.id
        WHERE s.n <> 0 OR s.t <> 0 ORDER BY c.id FOR NO KEY UPDATE OF c
    )
    UPDATE documents_collection c SET chunk_total = c.chunk_total + l.n, token_total = c.token_total + l.t
    FROM locked l WHERE c.id = l.id;
    RETURN NULL;
END $$;
""".format(changed=CHANGED)


def _as_before(sql: str) -> str:
    """The functions as migrations 0003 and 0005 made them: unnest(tsvector) and the database's collation."""
    sql = re.sub(r"unnest\(tsvector_to_array\((\w\.search_vector)\)\) u \(lexeme\)", r"unnest(\1) u", sql)
    return sql.replace('u.lexeme COLLATE "C"', "2").replace('t.lexeme COLLATE "C"', "t.lexeme")


class Migration(migrations.Migration):

    dependencies = [
        ("documents", "0009_document_library_sorts"),
    ]

    operations = [
        migrations.RunSQL(FUNCTIONS + UPDATE_FUNCTION, _as_before(FUNCTIONS + UPDATE_FUNCTION)),
    ]
