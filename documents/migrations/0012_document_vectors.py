"""Document vectors: the normalised mean of each document's chunk vectors, with a cosine HNSW index.

The store writes a document's vector with its chunks (documents.store); a trigger keeps its denormalised
collection true when the document moves (as 0005 does for the chunks), and the documents stored before
this migration get theirs here.
"""

import django.db.models.deletion
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models

TRIGGER = """
CREATE FUNCTION documents_document_vector_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE documents_documentvector SET collection_id = NEW.collection_id
    WHERE document_id = NEW.id AND collection_id IS DISTINCT FROM NEW.collection_id;
    RETURN NULL;
END $$;

CREATE TRIGGER documents_document_vector_follows AFTER UPDATE OF collection_id ON documents_document
    FOR EACH ROW WHEN (OLD.collection_id IS DISTINCT FROM NEW.collection_id)
    EXECUTE FUNCTION documents_document_vector_follows();

INSERT INTO documents_documentvector (document_id, collection_id, embedding, embedding_model)
SELECT c.document_id, min(c.collection_id), l2_normalize(avg(c.embedding)), min(c.embedding_model)
FROM documents_chunk c GROUP BY c.document_id;
"""

DROP_TRIGGER = """
DROP TRIGGER documents_document_vector_follows ON documents_document;
DROP FUNCTION documents_document_vector_follows();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0011_ingestion_progress_stage"),
    ]

    operations = [
        migrations.CreateModel(
            name="DocumentVector",
            fields=[
                (
                    "document",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="vector",
                        serialize=False,
                        to="documents.document",
                    ),
                ),
                ("embedding", pgvector.django.vector.VectorField(dimensions=384)),
                ("embedding_model", models.CharField(max_length=200)),
                (
                    "collection",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="documents.collection"
                    ),
                ),
            ],
            options={
                "indexes": [
                    pgvector.django.indexes.HnswIndex(
                        ef_construction=64,
                        fields=["embedding"],
                        m=16,
                        name="document_vector_hnsw",
                        opclasses=["vector_cosine_ops"],
                    )
                ],
            },
        ),
        migrations.RunSQL(TRIGGER, DROP_TRIGGER),
    ]
