"""Two indexes fewer to write: each was the first column of a unique index that serves the same lookups.

- ``documents_chunk (document_id)``: ``unique_chunk_ordinal`` is ``(document_id, ordinal)``;
- ``documents_termstat (collection_id)``: ``unique_term_per_collection`` is ``(collection_id, lexeme)``.

Storing a document of 50 chunks wrote 50 entries into the first and one for each of its new words into the
second (bench/ingest_store.py). Dropped CONCURRENTLY (core.schema.AlterFieldIndexConcurrently): a large table's
reads and writes never queue behind the migration.
"""

import django.db.models.deletion
from django.db import migrations, models

from core.schema import AlterFieldIndexConcurrently


class Migration(migrations.Migration):
    atomic = False  # the indexes are dropped CONCURRENTLY: reads and writes of the tables go on meanwhile

    dependencies = [
        ('documents', '0016_document_vectors_per_space'),
    ]

    operations = [
        AlterFieldIndexConcurrently(
            model_name='chunk',
            name='document',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='chunks', to='documents.document'),
        ),
        AlterFieldIndexConcurrently(
            model_name='termstat',
            name='collection',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='documents.collection'),
        ),
    ]
