"""Document vectors per embedding space: a ``space`` column, an untyped ``embedding``, one HNSW index per space.

The one HNSW index on ``vector(384)`` becomes a partial expression index per space
(documents.spaces.document_index: ``((embedding::vector(N)) vector_cosine_ops) WHERE space_id = <id>``). Existing
vectors are kept where their model is their collection's active space's (the chunk vectors were copied into
spaces the same way, 0015); the others, and documents without one, get theirs from their chunk vectors in the
active space, as the store would write them.
"""

import django.db.models.deletion
import pgvector.django.vector
from django.db import migrations, models

CONVERT = """
SET CONSTRAINTS ALL IMMEDIATE;  -- no deferred foreign-key checks left pending before the ALTERs that follow

UPDATE documents_documentvector v SET space_id = s.id
FROM documents_collection g JOIN documents_embeddingspace s ON s.id = g.active_space_id
WHERE g.id = v.collection_id AND s.model = v.embedding_model AND s.dimensions = vector_dims(v.embedding);
DELETE FROM documents_documentvector WHERE space_id IS NULL;

DO $$
DECLARE s record;
BEGIN
    FOR s IN SELECT DISTINCT e.id, e.dimensions FROM documents_embeddingspace e
             JOIN documents_collection g ON g.active_space_id = e.id ORDER BY e.id LOOP
        EXECUTE format(
            'INSERT INTO documents_documentvector (document_id, collection_id, space_id, embedding, embedding_model) '
            'SELECT m.document_id, m.collection_id, %1$s, l2_normalize(m.mean)::vector, '''' FROM ('
            '  SELECT cv.document_id, min(cv.collection_id) AS collection_id, avg(cv.embedding::vector(%2$s)) AS mean'
            '  FROM documents_chunkvector cv JOIN documents_collection g'
            '    ON g.id = cv.collection_id AND g.active_space_id = %1$s'
            '  WHERE cv.space_id = %1$s GROUP BY cv.document_id'
            ') m WHERE vector_norm(m.mean) > 0 ON CONFLICT (document_id) DO NOTHING',
            s.id, s.dimensions);
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS documents_documentvector_s%1$s_hnsw ON documents_documentvector '
            'USING hnsw ((embedding::vector(%2$s)) vector_cosine_ops) WITH (m = 16, ef_construction = 64) '
            'WHERE space_id = %1$s',
            s.id, s.dimensions);
    END LOOP;
END $$;
"""

# Back to one model's vectors: the space's model name, and only the vectors the typed column can hold.
REVERT = """
DO $$
DECLARE i record;
BEGIN
    FOR i IN SELECT relname FROM pg_class
             WHERE relkind = 'i' AND relname ~ '^documents_documentvector_s[0-9]+_hnsw$' LOOP
        EXECUTE format('DROP INDEX %I', i.relname);
    END LOOP;
END $$;
UPDATE documents_documentvector v SET embedding_model = s.model FROM documents_embeddingspace s WHERE s.id = v.space_id;
DELETE FROM documents_documentvector WHERE vector_dims(embedding) <> %(dimensions)s;
"""


def _revert(apps, schema_editor):
    from django.conf import settings

    schema_editor.execute(REVERT.replace("%(dimensions)s", str(int(settings.EMBEDDING_DIMENSIONS))), params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0015_chunk_vectors_in_spaces"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="documentvector", name="document_vector_hnsw"),
        migrations.AddField(
            model_name="documentvector",
            name="space",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="documents.embeddingspace",
            ),
        ),
        migrations.AlterField(
            model_name="documentvector",
            name="embedding",
            field=pgvector.django.vector.VectorField(),
        ),
        migrations.RunSQL(CONVERT, migrations.RunSQL.noop),
        migrations.RunPython(migrations.RunPython.noop, _revert),
        # A default, so that the way back can add the column again to existing rows (_revert fills it).
        migrations.AlterField(
            model_name="documentvector", name="embedding_model", field=models.CharField(default="", max_length=200)
        ),
        migrations.RemoveField(model_name="documentvector", name="embedding_model"),
        migrations.AlterField(
            model_name="documentvector",
            name="space",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="documents.embeddingspace",
            ),
        ),
    ]
