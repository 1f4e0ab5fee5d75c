"""Chunk vectors move into embedding spaces: one space per model that made them, the chunk table keeps the text.

Every distinct ``chunk.embedding_model`` becomes an embedding space (its backend inferred from the name and the
configuration, its dimensions those of the column), its vectors are copied into the space's partition of the
ChunkVector table, then indexed (HNSW per distance in use: one build after the copy, not row by row). Every
collection gets an active space: the configured model's when it holds chunks of it, else the model most of its
chunks were embedded with, else (no chunks) the space of the current settings, worked out without loading a
model. Then the chunk table's vector, model and distance columns and their indexes are dropped.

The triggers of migrations 0005 and 0008 keep the vectors' copies true (ChunkVector.collection_id, document_id,
distance) in the statement that changes their source:
- a chunk's collection or document changing (a document moved between collections: 0005's trigger moves its
  chunks) moves its vectors (a statement-level trigger on the chunk table);
- a collection's distance changing moves its vectors (0008's trigger, which updated the chunk's own copy).
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

CHUNK_TRIGGERS = """
CREATE OR REPLACE FUNCTION documents_document_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The chunks' vectors follow them (documents_chunk_vectors_follow, below), in this same statement.
    UPDATE documents_chunk c SET collection_id = NEW.collection_id, metadata = NEW.metadata
    WHERE c.document_id = NEW.id
      AND (c.collection_id, c.metadata) IS DISTINCT FROM (NEW.collection_id, NEW.metadata);
    RETURN NULL;
END $$;

CREATE FUNCTION documents_chunk_vectors_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- By chunk id: the primary key (chunk_id, space_id) of every partition finds a chunk's vectors.
    UPDATE documents_chunkvector v
    SET collection_id = n.collection_id, document_id = n.document_id, distance = g.distance
    FROM new_rows n JOIN old_rows o ON o.id = n.id JOIN documents_collection g ON g.id = n.collection_id
    WHERE v.chunk_id = n.id
      AND (o.collection_id, o.document_id) IS DISTINCT FROM (n.collection_id, n.document_id)
      AND (v.collection_id, v.document_id, v.distance) IS DISTINCT FROM (n.collection_id, n.document_id, g.distance);
    RETURN NULL;
END $$;

CREATE TRIGGER documents_chunk_vectors_follow AFTER UPDATE ON documents_chunk
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION documents_chunk_vectors_follow();

CREATE OR REPLACE FUNCTION documents_collection_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Which partial HNSW index of each space holds the collection's vectors (documents_chunkvector_collection
    -- finds them).
    UPDATE documents_chunkvector SET distance = NEW.distance
    WHERE collection_id = NEW.id AND distance IS DISTINCT FROM NEW.distance;
    RETURN NULL;
END $$;
"""

# Backwards: the triggers as migrations 0005 and 0008 wrote them (the chunk's own distance column is back).
DROP_CHUNK_TRIGGERS = """
DROP TRIGGER documents_chunk_vectors_follow ON documents_chunk;
DROP FUNCTION documents_chunk_vectors_follow();

CREATE OR REPLACE FUNCTION documents_document_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents_chunk c SET collection_id = NEW.collection_id, distance = g.distance, metadata = NEW.metadata
    FROM documents_collection g
    WHERE g.id = NEW.collection_id AND c.document_id = NEW.id
      AND (c.collection_id, c.distance, c.metadata) IS DISTINCT FROM (NEW.collection_id, g.distance, NEW.metadata);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION documents_collection_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents_chunk SET distance = NEW.distance
    WHERE collection_id = NEW.id AND distance IS DISTINCT FROM NEW.distance;
    RETURN NULL;
END $$;
"""

DROP_COLUMNS = """
DROP INDEX IF EXISTS chunk_collection_model;
ALTER TABLE documents_chunk DROP COLUMN embedding, DROP COLUMN embedding_model, DROP COLUMN distance;
"""


def restore_columns(apps, schema_editor):
    """Backwards: the chunk's vector, model and distance columns and their indexes, filled from each collection's
    active space (when its dimensions are the column's); a chunk without such a vector keeps a NULL one."""
    dimensions = int(settings.EMBEDDING_DIMENSIONS)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE documents_chunk ADD COLUMN embedding vector({dimensions}), "
            "ADD COLUMN embedding_model varchar(200) NOT NULL DEFAULT '', "
            "ADD COLUMN distance varchar(6) NOT NULL DEFAULT 'cosine'"
        )
        cursor.execute(
            f"UPDATE documents_chunk c SET embedding = v.embedding::vector({dimensions}), embedding_model = s.model, "
            "distance = v.distance FROM documents_collection g, documents_chunkvector v, documents_embeddingspace s "
            "WHERE g.id = c.collection_id AND v.chunk_id = c.id AND v.space_id = g.active_space_id "
            "AND s.id = v.space_id AND s.dimensions = %s",
            [dimensions],
        )
        cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM documents_chunk WHERE embedding IS NULL)")
        if cursor.fetchone()[0]:
            cursor.execute("ALTER TABLE documents_chunk ALTER COLUMN embedding SET NOT NULL")
        cursor.execute("ALTER TABLE documents_chunk ALTER COLUMN embedding_model DROP DEFAULT")
        for distance, opclass in OPCLASSES.items():
            cursor.execute(
                f"CREATE INDEX chunk_embedding_hnsw_{distance} ON documents_chunk USING hnsw (embedding {opclass}) "
                f"WITH (m = 16, ef_construction = 64) WHERE distance = '{distance}'"
            )
        cursor.execute("CREATE INDEX chunk_collection_model ON documents_chunk (collection_id, embedding_model)")

OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}


def configured_fields() -> dict:
    """The space the current EMBEDDING_* settings embed into, as documents.spaces.registry.describe() says it,
    worked out from the settings alone (no model is loaded by a migration)."""
    from documents.embeddings import DEFAULT_FASTEMBED_MODEL, DEFAULT_OPENAI_MODEL
    from documents.embeddings.local import LOCAL_MODEL_NAME, LOCAL_MODEL_SHA256

    choice = settings.EMBEDDING_BACKEND
    if choice == "auto":
        if settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
            choice = "openai"
        elif settings.EMBEDDING_MODEL or settings.EMBEDDING_MODEL_PATH:
            choice = "fastembed"
        else:
            choice = "local"
    dimensions = settings.EMBEDDING_DIMENSIONS
    if choice == "hashing":
        return {
            "backend": "hashing",
            "model": f"hashing-{dimensions}",
            "fingerprint": "",
            "model_path": "",
            "dimensions": dimensions,
        }
    if choice == "openai":
        model = settings.EMBEDDING_MODEL or DEFAULT_OPENAI_MODEL
        return {"backend": "openai", "model": model, "fingerprint": model, "model_path": "", "dimensions": dimensions}
    if choice == "fastembed":
        model = settings.EMBEDDING_MODEL or DEFAULT_FASTEMBED_MODEL
        return {
            "backend": "fastembed",
            "model": model,
            "fingerprint": settings.EMBEDDING_MODEL_PATH or model,
            "model_path": settings.EMBEDDING_MODEL_PATH,
            "dimensions": dimensions,
        }
    return {
        "backend": "local",
        "model": LOCAL_MODEL_NAME,
        "fingerprint": "sha256:" + LOCAL_MODEL_SHA256["model.onnx"],
        "model_path": "",
        "dimensions": dimensions,
    }


def inferred_fields(model: str, dimensions: int) -> dict:
    """The space of vectors a model of that name made, when it is not the configured one."""
    from documents.embeddings.local import LOCAL_MODEL_NAME, LOCAL_MODEL_SHA256

    if model.startswith("hashing-"):
        return {"backend": "hashing", "model": model, "fingerprint": "", "model_path": "", "dimensions": dimensions}
    if model == LOCAL_MODEL_NAME:
        return {
            "backend": "local",
            "model": model,
            "fingerprint": "sha256:" + LOCAL_MODEL_SHA256["model.onnx"],
            "model_path": "",
            "dimensions": dimensions,
        }
    if model.startswith("text-embedding-"):
        return {"backend": "openai", "model": model, "fingerprint": model, "model_path": "", "dimensions": dimensions}
    return {"backend": "fastembed", "model": model, "fingerprint": model, "model_path": "", "dimensions": dimensions}


def _space(EmbeddingSpace, fields: dict, cursor):
    """The (non-retired) space of those fields, created with its partition when there is none."""
    from documents.spaces.registry import chunking, space_name

    space = (
        EmbeddingSpace.objects.filter(
            backend=fields["backend"],
            model=fields["model"],
            fingerprint=fields["fingerprint"],
            dimensions=fields["dimensions"],
        )
        .exclude(status="retired")
        .order_by("id")
        .first()
    )
    if space is None:
        name, suffix = space_name(fields), 1
        while EmbeddingSpace.objects.filter(name=name).exists():
            suffix += 1
            name = f"{space_name(fields)}-{suffix}"
        space = EmbeddingSpace.objects.create(name=name, status="active", chunking=chunking(), **fields)
    partition = f"documents_chunkvector_s{int(space.pk)}"
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [partition])
    if not cursor.fetchone()[0]:
        cursor.execute(
            f'CREATE TABLE "{partition}" (LIKE documents_chunkvector INCLUDING DEFAULTS, '
            f'CONSTRAINT "{partition}_space" CHECK (space_id = {int(space.pk)}))'
        )
        cursor.execute(
            f'ALTER TABLE documents_chunkvector ATTACH PARTITION "{partition}" FOR VALUES IN ({int(space.pk)})'
        )
    return space


def _index(cursor, space, distance: str) -> None:
    partition = f"documents_chunkvector_s{int(space.pk)}"
    cursor.execute(
        f'CREATE INDEX IF NOT EXISTS "{partition}_hnsw_{distance}" ON "{partition}" USING hnsw '
        f"((embedding::vector({int(space.dimensions)})) {OPCLASSES[distance]}) "
        f"WITH (m = 16, ef_construction = 64) WHERE distance = '{distance}'"
    )


def copy_vectors(apps, schema_editor):
    EmbeddingSpace = apps.get_model("documents", "EmbeddingSpace")
    Collection = apps.get_model("documents", "Collection")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'documents_chunk'::regclass AND attname = 'embedding'"
        )
        row = cursor.fetchone()
        dimensions = int(row[0]) if row and row[0] > 0 else settings.EMBEDDING_DIMENSIONS
        configured = configured_fields()
        # (collection, model, chunks): one index-only scan of chunk_collection_model.
        cursor.execute("SELECT collection_id, embedding_model, count(*) FROM documents_chunk GROUP BY 1, 2")
        counts = cursor.fetchall()
        spaces = {}
        for model in sorted({model for _, model, _ in counts}):
            same = model == configured["model"] and dimensions == configured["dimensions"]
            space = spaces[model] = _space(
                EmbeddingSpace, configured if same else inferred_fields(model, dimensions), cursor
            )
            cursor.execute(
                f'INSERT INTO "documents_chunkvector_s{int(space.pk)}" '
                "(chunk_id, space_id, collection_id, document_id, distance, embedding) "
                "SELECT id, %s, collection_id, document_id, distance, embedding FROM documents_chunk "
                "WHERE embedding_model = %s ON CONFLICT DO NOTHING",
                [space.pk, model],
            )
            cursor.execute(f'SELECT DISTINCT distance FROM "documents_chunkvector_s{int(space.pk)}"')
            for (distance,) in cursor.fetchall():
                _index(cursor, space, distance)
        # Each collection's active space: the configured model's if it has chunks of it, else its commonest.
        chosen: dict[int, object] = {}
        for collection_id, model, _count in sorted(counts, key=lambda r: (r[0], r[1] != configured["model"], -r[2])):
            chosen.setdefault(collection_id, spaces[model])
        default = None
        now = timezone.now()
        for collection in Collection.objects.filter(active_space__isnull=True).order_by("id"):
            space = chosen.get(collection.pk)
            if space is None:
                default = default or _space(EmbeddingSpace, configured, cursor)
                space = default
            _index(cursor, space, collection.distance)
            Collection.objects.filter(pk=collection.pk).update(active_space=space)
        used = Collection.objects.values_list("active_space", flat=True)
        EmbeddingSpace.objects.filter(pk__in=used, activated_at__isnull=True).update(status="active", activated_at=now)
        if default is not None:
            _index(cursor, default, "cosine")


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0014_embedding_spaces"),
    ]

    operations = [
        migrations.RunPython(copy_vectors, migrations.RunPython.noop),
        migrations.RunSQL(CHUNK_TRIGGERS, DROP_CHUNK_TRIGGERS),
        # Dropping the columns drops their indexes; backwards, they come back filled from the spaces.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw_cosine"),
                migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw_l2"),
                migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw_ip"),
                migrations.RemoveIndex(model_name="chunk", name="chunk_collection_model"),
                migrations.RemoveField(model_name="chunk", name="embedding"),
                migrations.RemoveField(model_name="chunk", name="embedding_model"),
                migrations.RemoveField(model_name="chunk", name="distance"),
            ],
            database_operations=[
                migrations.RunSQL(DROP_COLUMNS, migrations.RunSQL.noop),
                migrations.RunPython(migrations.RunPython.noop, restore_columns),
            ],
        ),
    ]
