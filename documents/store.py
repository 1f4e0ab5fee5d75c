"""The store: a document's chunks and vectors replace its old ones in one transaction, by binary COPY."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from core import replicas
from documents.chunking import ChunkDraft
from documents.db import vector_cursor
from documents.models import Chunk, Collection, Document
from documents.similar import document_vector_write


class IngestCancelled(Exception):
    """This run's result is no longer wanted (cancelled, deleted or queued again meanwhile): store nothing."""


COPY_COLUMNS = (
    ("document_id", "int8"),
    ("collection_id", "int8"),
    ("ordinal", "int4"),
    ("text", "text"),
    ("page", "int4"),
    ("heading", "text"),
    ("char_start", "int4"),
    ("char_end", "int4"),
    ("token_count", "int4"),
    ("metadata", "jsonb"),
    ("embedding", "vector"),
    ("embedding_model", "varchar"),
    ("distance", "varchar"),
)


def store_chunks(
    *,
    document: Document,
    drafts: list[ChunkDraft],
    vectors: np.ndarray,
    model_name: str,
    page_count: int | None = None,
    on_stored: Callable[[], None] | None = None,
) -> None:
    """Replace the document's chunks in one transaction, writing them with binary COPY.

    COPY is the fastest way into PostgreSQL (one round trip, no per-row parsing); one
    transaction means a retried task can never leave duplicates or half a document. A document
    cancelled meanwhile is refused (``IngestCancelled``) under its row lock.
    """
    if len(drafts) != len(vectors):
        raise ValueError(f"{len(drafts)} chunks but {len(vectors)} vectors")
    with transaction.atomic():
        # The few statements around the COPY are plain SQL: the worker runs them once per document,
        # and compiling them with the ORM cost more than running them (bench/ingest_store.py).
        with connection.cursor() as cursor:
            # Lock the document's row (not its collection's): two runs of the same document store
            # one after the other, and a cancellation either came before (and is seen here) or waits
            # and then finds the document stored. The same statement reads the distance, i.e. which
            # partial HNSW index the rows join, and the collection and metadata the chunks copy as they
            # are now: an edit during the run (which moves stored chunks, migration 0005) is not undone.
            cursor.execute(
                f"SELECT d.collection_id, c.distance, d.status, d.metadata::text FROM {Document._meta.db_table} d "
                f"JOIN {Collection._meta.db_table} c ON c.id = d.collection_id WHERE d.id = %s FOR UPDATE OF d",
                [document.pk],
            )
            row = cursor.fetchone()
            if row is None:
                raise IngestCancelled("deleted while it was processed")
            collection_id, distance, status, metadata_text = row
            # Sent as the text PostgreSQL gave: every row of the COPY would otherwise dump the dict again.
            metadata = Jsonb(None, dumps=lambda _: metadata_text or "{}")
            if status == Document.Status.CANCELLED:
                raise IngestCancelled("cancelled while it was processed")
            # A separate statement, so that it sees what a run we waited for committed.
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {Chunk._meta.db_table} WHERE document_id = %s)",
                           [document.pk])
            replacing = cursor.fetchone()[0]
        if replacing:
            # Through the ORM, which clears the citations of the old chunks; only their ids are read.
            Chunk.objects.filter(document_id=document.pk).only("pk").delete()
        copy_chunk_rows(
            (
                document.pk, collection_id, draft.ordinal, draft.text, draft.page,
                draft.heading, draft.char_start, draft.char_end, draft.token_count,
                metadata, vector, model_name, distance,
            )
            for draft, vector in zip(drafts, np.asarray(vectors, dtype=np.float32), strict=True)
        )
        document_vector_write(document_id=document.pk, collection_id=collection_id, vectors=vectors,
                              model_name=model_name)
        Document.objects.filter(pk=document.pk).update(
            status=Document.Status.READY, progress=1.0, error="", chunk_count=len(drafts), stage="",
            chunks_total=len(drafts), chunks_embedded=len(drafts), page_count=page_count,
            finished_at=timezone.now(), updated_at=timezone.now(),
        )
        if on_stored is not None:
            on_stored()
        replicas.note_write_on_commit(document.owner_id)  # the uploader's next search sees it (core.replicas)


def copy_chunk_rows(rows) -> int:
    """Write chunk rows (in COPY_COLUMNS order) with binary COPY on Django's connection."""
    columns = ", ".join(name for name, _ in COPY_COLUMNS)
    with vector_cursor() as cursor:
        count = 0
        with cursor.copy(f"COPY {Chunk._meta.db_table} ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in COPY_COLUMNS])
            for row in rows:
                copy.write_row(row)
                count += 1
    return count
