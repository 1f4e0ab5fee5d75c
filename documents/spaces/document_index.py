"""The HNSW indexes of the document vectors: one partial expression index per embedding space.

The DocumentVector table is not partitioned (it holds one row per document, a hundredth of the chunks): its
``embedding`` column is pgvector's untyped ``vector``, and each space that has document vectors gets
``USING hnsw ((embedding::vector(N)) vector_cosine_ops) WHERE space_id = <id>``. A statement uses it by
filtering ``space_id = <id literal>`` and ordering by ``document_expression(space)`` — the same expression.
"""

from __future__ import annotations

from django.db import connection

from documents.models import DocumentVector, EmbeddingSpace

TABLE = DocumentVector._meta.db_table
# HNSW's build parameters, as the chunk vectors' (documents.spaces.storage).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def document_index_name(space: EmbeddingSpace | int) -> str:
    return f"{TABLE}_s{space if isinstance(space, int) else space.pk}_hnsw"


def document_expression(dimensions: int, column: str = "embedding") -> str:
    """The expression a space's document index is built on (statements must order by the same one)."""
    return f"({column}::vector({int(dimensions)}))"


def document_index_exists(space: EmbeddingSpace | int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [document_index_name(space)])
        return bool(cursor.fetchone()[0])


def create_document_index(space: EmbeddingSpace, *, concurrently: bool = False) -> None:
    """The cosine HNSW index of ``space``'s document vectors (idempotent).

    Without ``concurrently`` it is built in the caller's transaction (the store's, the switch's) and holds a
    SHARE lock on the table until it commits: only the first document of a space, or a switch, pays it. Two
    transactions making it at once would each wait for the other's rows (SHARE against ROW EXCLUSIVE): they take
    a transaction-level advisory lock first, so the second finds the first's index (IF NOT EXISTS) once that one
    commits; a caller writes its own rows after this (documents.similar.document_vector_write does). Django's
    foreign keys are checked at commit, and PostgreSQL refuses to index a table with checks pending: the
    transaction's pending checks run first (SET CONSTRAINTS ... IMMEDIATE checks them now), and its constraints
    are deferred again after (Django's are all DEFERRABLE INITIALLY DEFERRED).
    """
    how = "CONCURRENTLY " if concurrently else ""
    with connection.cursor() as cursor:
        if not concurrently:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [TABLE + " index"])
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            f"CREATE INDEX {how}IF NOT EXISTS {connection.ops.quote_name(document_index_name(space))} "
            f"ON {connection.ops.quote_name(TABLE)} USING hnsw "
            f"({document_expression(space.dimensions)} vector_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE space_id = {int(space.pk)}"
        )
        if not concurrently:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def drop_document_index(space: EmbeddingSpace | int) -> None:
    """Drop a retired space's document index (CONCURRENTLY: outside a transaction; no lock on other spaces')."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {connection.ops.quote_name(document_index_name(space))}")
