"""The store: a document's chunks and vectors replace its old ones in one transaction, by binary COPY.

The chunk table holds the text; the vectors go to the collection's embedding spaces (documents.spaces): its
active one, and during a migration its target one too, in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from core import replicas
from documents.chunking import ChunkDraft
from documents.models import Chunk, Collection, Document, EmbeddingSpace
from documents.similar import document_vector_write
from documents.spaces.vectors import write_vectors


class IngestCancelled(Exception):
    """This run's result is no longer wanted (cancelled, deleted or queued again meanwhile): store nothing."""


class SpacesChanged(Exception):
    """The collection's embedding spaces changed while the run embedded (a migration started, a switch): the
    vectors of ``missing`` (space ids) are needed too. Nothing was stored; embed for them and store again."""

    def __init__(self, missing: list[int]):
        super().__init__(f"vectors of embedding space(s) {', '.join(map(str, missing))} are needed")
        self.missing = missing


# The chunk rows: their text and where it came from. Their vectors go to the embedding spaces (write_vectors).
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
)


def store_chunks(
    *,
    document: Document,
    drafts: list[ChunkDraft],
    vectors: Mapping[int, np.ndarray] | np.ndarray,
    page_count: int | None = None,
    on_stored: Callable[[], None] | None = None,
) -> None:
    """Replace the document's chunks and their vectors in one transaction, writing them with binary COPY.

    ``vectors``: the chunks' vectors of each embedding space (by space id), or one array for the collection's
    active space. The vectors of the collection's active space, and of its target space during a migration,
    are stored; when one of them is missing (the spaces changed while the run embedded) nothing is, and
    ``SpacesChanged`` names what to embed.

    COPY is the fastest way into PostgreSQL (one round trip, no per-row parsing); one
    transaction means a retried task can never leave duplicates or half a document. A document
    cancelled meanwhile is refused (``IngestCancelled``) under its row lock.
    """
    by_space: Mapping[int, np.ndarray] | None = vectors if isinstance(vectors, Mapping) else None
    for array in by_space.values() if by_space is not None else [vectors]:
        if len(drafts) != len(array):
            raise ValueError(f"{len(drafts)} chunks but {len(array)} vectors")
    with transaction.atomic():
        # The few statements around the COPY are plain SQL: the worker runs them once per document,
        # and compiling them with the ORM cost more than running them (bench/ingest_store.py).
        with connection.cursor() as cursor:
            # Lock the document's row (not its collection's): two runs of the same document store
            # one after the other, and a cancellation either came before (and is seen here) or waits
            # and then finds the document stored. The same statement reads the collection and metadata
            # the chunks copy as they are now: an edit during the run (which moves stored chunks,
            # migration 0005) is not undone.
            cursor.execute(
                f"SELECT d.collection_id, d.status, d.metadata::text FROM {Document._meta.db_table} d "
                "WHERE d.id = %s FOR UPDATE OF d",
                [document.pk],
            )
            row = cursor.fetchone()
            if row is None:
                raise IngestCancelled("deleted while it was processed")
            collection_id, status, metadata_text = row
            # Sent as the text PostgreSQL gave: every row of the COPY would otherwise dump the dict again.
            metadata = Jsonb(None, dumps=lambda _: metadata_text or "{}")
            if status == Document.Status.CANCELLED:
                raise IngestCancelled("cancelled while it was processed")
            # A separate statement, so that it sees what a run we waited for committed: whether the document
            # has chunks to replace, and the new chunks' ids, taken from their sequence in draft order, so that
            # the chunks and their vectors are copied without reading the ids back.
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {Chunk._meta.db_table} WHERE document_id = %s), "
                "ARRAY(SELECT nextval(%s::regclass) FROM generate_series(1, %s))",
                [document.pk, chunk_id_sequence(), len(drafts)],
            )
            replacing, chunk_ids = cursor.fetchone()
        if replacing:
            # Through the ORM, which clears the citations of the old chunks; only their ids are read.
            Chunk.objects.filter(document_id=document.pk).only("pk").delete()
        copy_chunk_rows(
            (
                (
                    chunk_id, document.pk, collection_id, draft.ordinal, draft.text, draft.page,
                    draft.heading, draft.char_start, draft.char_end, draft.token_count, metadata,
                )
                for chunk_id, draft in zip(chunk_ids, drafts, strict=True)
            ),
            ids=True,
        )
        with connection.cursor() as cursor:
            # The collection's spaces and distance, read under the lock the chunks' statistics trigger took on its
            # row with the COPY (taken again here, for a document without chunks): a migration starting, a switch
            # or a distance change waits for this transaction, or committed before and is seen here. So a
            # backfill that starts after it either sees these chunks or finds their vectors written here.
            # The spaces' names and dimensions come in the same statement (what write_vectors needs).
            space_table = EmbeddingSpace._meta.db_table
            cursor.execute(
                f"SELECT g.active_space_id, g.target_space_id, g.distance, a.name, a.dimensions, t.name, t.dimensions "
                f"FROM {Collection._meta.db_table} g LEFT JOIN {space_table} a ON a.id = g.active_space_id "
                f"LEFT JOIN {space_table} t ON t.id = g.target_space_id WHERE g.id = %s FOR NO KEY UPDATE OF g",
                [collection_id],
            )
            active_id, target_id, distance, active_name, active_dimensions, target_name, target_dimensions = (
                cursor.fetchone()
            )
            spaces = {active_id: EmbeddingSpace(pk=active_id, name=active_name, dimensions=active_dimensions)}
            if target_id is not None:
                spaces[target_id] = EmbeddingSpace(pk=target_id, name=target_name, dimensions=target_dimensions)
            wanted = list(spaces)
            if by_space is None:
                by_space = {active_id: np.asarray(vectors)}
            missing = [space_id for space_id in wanted if space_id not in by_space]
            if missing:
                raise SpacesChanged(missing)
        for space_id in wanted:
            write_vectors(
                space=spaces[space_id],
                rows=((chunk_id, collection_id, document.pk, distance, vector)
                      for chunk_id, vector in zip(chunk_ids, by_space[space_id], strict=True)),
            )
        document_vector_write(document_id=document.pk, collection_id=collection_id, vectors=by_space[active_id],
                              space_id=active_id)
        Document.objects.filter(pk=document.pk).update(
            status=Document.Status.READY, progress=1.0, error="", chunk_count=len(drafts), stage="",
            chunks_total=len(drafts), chunks_embedded=len(drafts), page_count=page_count,
            finished_at=timezone.now(), updated_at=timezone.now(),
        )
        if on_stored is not None:
            on_stored()
        replicas.note_write_on_commit(document.owner_id)  # the uploader's next search sees it (core.replicas)


@functools.cache
def chunk_id_sequence() -> str:
    """The sequence of the chunks' ids (its name follows from the table's: looked up once per process)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Chunk._meta.db_table])
        return cursor.fetchone()[0]


def copy_chunk_rows(rows, *, ids: bool = False) -> int:
    """Write chunk rows (in COPY_COLUMNS order, after their id with ``ids``) with binary COPY on Django's
    connection."""
    columns = [("id", "int8"), *COPY_COLUMNS] if ids else COPY_COLUMNS
    names = ", ".join(name for name, _ in columns)
    with connection.cursor() as cursor:
        count = 0
        with cursor.copy(f"COPY {Chunk._meta.db_table} ({names}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in columns])
            for row in rows:
                copy.write_row(row)
                count += 1
    return count
