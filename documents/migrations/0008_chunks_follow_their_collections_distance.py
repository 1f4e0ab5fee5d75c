"""A collection's chunks follow its distance, whatever writes it.

Chunks copy their collection's distance: it says which partial HNSW index holds them. Until now only the
admin moved them (after its save, in Python); a QuerySet.update() or raw SQL left them in the old index,
where a search of the new distance does not look. This trigger moves them in the statement that changes
the collection. The BM25 statistics do not count the distance, so they stay as they are.
"""

from django.db import migrations

TRIGGER = """
CREATE FUNCTION documents_collection_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents_chunk SET distance = NEW.distance
    WHERE collection_id = NEW.id AND distance IS DISTINCT FROM NEW.distance;
    RETURN NULL;
END $$;

CREATE TRIGGER documents_collection_chunks_follow AFTER UPDATE OF distance ON documents_collection
    FOR EACH ROW WHEN (OLD.distance IS DISTINCT FROM NEW.distance)
    EXECUTE FUNCTION documents_collection_chunks_follow();

-- Copies that went stale before this migration.
UPDATE documents_chunk c SET distance = g.distance
FROM documents_collection g
WHERE g.id = c.collection_id AND c.distance IS DISTINCT FROM g.distance;
"""

DROP_TRIGGER = """
DROP TRIGGER documents_collection_chunks_follow ON documents_collection;
DROP FUNCTION documents_collection_chunks_follow();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("documents", "0007_apitoken_moved_to_core"),
    ]

    operations = [
        migrations.RunSQL(TRIGGER, DROP_TRIGGER),
    ]
