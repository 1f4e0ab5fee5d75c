"""Where a space's vectors live: one partition of the ChunkVector table per space, with its own HNSW indexes.

Adding a space creates an empty table and attaches it (ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on the
parent: reads and writes of the other spaces go on); retiring one detaches it CONCURRENTLY and drops it,
instead of deleting its rows from a shared table. The column is pgvector's untyped ``vector``: each
partition's HNSW index casts to its space's dimensions, ``(embedding::vector(N))``, and a statement that
should use it orders by the same expression (``vector_expression``).
"""

from __future__ import annotations

from django.db import connection

from documents.models import ChunkVector, Distance, EmbeddingSpace

PARENT = ChunkVector._meta.db_table

# The operator class of each distance, as the chunk table's indexes had them.
OPCLASSES = {
    Distance.COSINE: "vector_cosine_ops",
    Distance.L2: "vector_l2_ops",
    Distance.INNER_PRODUCT: "vector_ip_ops",
}
# HNSW's build parameters, as the chunk table's indexes had them (documents.search.indexes may rebuild).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


def partition_name(space: EmbeddingSpace | int) -> str:
    return f"{PARENT}_s{space if isinstance(space, int) else space.pk}"


def index_name(space: EmbeddingSpace | int, distance: str) -> str:
    return f"{partition_name(space)}_hnsw_{distance}"


def vector_expression(space: EmbeddingSpace, column: str = "embedding") -> str:
    """The expression a space's HNSW index is built on (and statements must order by to use it)."""
    return f"({column}::vector({int(space.dimensions)}))"


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def partition_exists(space: EmbeddingSpace | int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [partition_name(space)])
        return cursor.fetchone()[0]


def create_partition(space: EmbeddingSpace) -> None:
    """An empty partition for ``space``'s vectors, attached to the parent table (idempotent).

    A table left by an earlier space of the same id (a test database flushed, a transaction rolled back
    elsewhere) is dropped first: its indexes may cast to other dimensions.
    """
    name = _quote(partition_name(space))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = %s)",
            [partition_name(space)],
        )
        attached = cursor.fetchone()[0]
        if attached and partition_exists(space):
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {name})")
            if cursor.fetchone()[0]:
                return  # a live partition with rows: this space's own
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
                           [partition_name(space), "%USING hnsw%"])
            if all(f"vector({int(space.dimensions)})" in row[0] for row in cursor.fetchall()):
                return  # empty, with indexes of the right length: reused as it is
            # Dropping an attached partition locks the parent ACCESS EXCLUSIVE for a moment. Only a table left by
            # another space of the same id gets here (a flushed test database: ids are never reused otherwise).
            cursor.execute(f"DROP TABLE {name}")
        elif partition_exists(space):
            cursor.execute(f"DROP TABLE {name}")
        # LIKE ... then ATTACH: CREATE TABLE ... PARTITION OF would lock the parent ACCESS EXCLUSIVE. The CHECK
        # constraint lets ATTACH skip its validating scan.
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {_quote(PARENT)} INCLUDING DEFAULTS, "
            f"CONSTRAINT {_quote(partition_name(space) + '_space')} CHECK (space_id = {int(space.pk)}))"
        )
        cursor.execute(f"ALTER TABLE {_quote(PARENT)} ATTACH PARTITION {name} FOR VALUES IN ({int(space.pk)})")


def create_index(space: EmbeddingSpace, distance: str, *, concurrently: bool = False) -> None:
    """The HNSW index of ``space``'s vectors of ``distance`` (a partial index: a collection's rows are in one).

    ``concurrently``: built without blocking writes (outside a transaction), after a backfill; a new space
    that starts empty gets it at once instead, and every row is indexed as it is written.
    """
    opclass, how = OPCLASSES[Distance(distance)], "CONCURRENTLY " if concurrently else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX {how}IF NOT EXISTS {_quote(index_name(space, distance))} "
            f"ON {_quote(partition_name(space))} USING hnsw ({vector_expression(space)} {opclass}) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
            f"WHERE distance = '{Distance(distance).value}'"
        )


def drop_partition(space: EmbeddingSpace) -> None:
    """Detach (CONCURRENTLY: no lock that blocks readers or writers of other spaces) and drop the partition.

    Must run outside a transaction (DETACH ... CONCURRENTLY refuses to run in one).
    """
    if not partition_exists(space):
        return
    name = _quote(partition_name(space))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname = %s)",
            [partition_name(space)],
        )
        if cursor.fetchone()[0]:
            cursor.execute(f"ALTER TABLE {_quote(PARENT)} DETACH PARTITION {name} CONCURRENTLY")
        cursor.execute(f"DROP TABLE {name}")
