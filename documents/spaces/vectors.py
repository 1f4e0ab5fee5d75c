"""Writing a space's chunk vectors (binary COPY into its partition) and searching one space.

Every statement here names the space by an id literal (the partition is pruned at plan time) and orders by
the space's index expression (``storage.vector_expression``), so that its HNSW index answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.db import connection, transaction

from documents.db import vector_cursor
from documents.models import Distance, EmbeddingSpace
from documents.spaces import registry
from documents.spaces.storage import PARENT, create_index, index_name, partition_name, vector_expression

# The operator of each distance (as its index's opclass) and its result turned into a cosine similarity:
# every backend's vectors are L2-normalised, so the three are comparable (documents.search.sql has the same).
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
SIMILARITY = {"cosine": "1 - {d}", "l2": "1 - {d} * {d} / 2", "ip": "-{d}"}

COPY_COLUMNS = (
    ("chunk_id", "int8"),
    ("space_id", "int8"),
    ("collection_id", "int8"),
    ("document_id", "int8"),
    ("distance", "varchar"),
    ("embedding", "vector"),
)


# Spaces by id, as this process read them: a space's model and dimensions never change, so a search reads its
# spaces from here instead of adding a round trip (a retired space is no collection's active one: never asked).
_spaces: dict[int, EmbeddingSpace] = {}


def by_ids(space_ids: Iterable[int]) -> dict[int, EmbeddingSpace]:
    """The spaces of those ids, read from the database once per process."""
    wanted = set(space_ids)
    missing = wanted - _spaces.keys()
    if missing:
        _spaces.update(EmbeddingSpace.objects.in_bulk(missing))
    return {space_id: _spaces[space_id] for space_id in wanted if space_id in _spaces}


def default() -> EmbeddingSpace:
    """The configured default space (registry.default_space), without its check against the database once this
    process knows it: searched speculatively by every search's first round trip."""
    space = registry.known_default() or registry.default_space()
    _spaces.setdefault(space.pk, space)
    return space


def ensure_index(space: EmbeddingSpace, distance: str) -> None:
    """The HNSW index of ``distance`` in ``space`` (a collection now searches it by that distance), built when
    missing: looked up first, so that nothing locks the partition when it is there."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [index_name(space, distance)])
        if cursor.fetchone()[0]:
            return
    create_index(space, distance)


def write_vectors(*, space: EmbeddingSpace, rows: Iterable[tuple[int, int, int, str, np.ndarray]]) -> int:
    """Write ``(chunk_id, collection_id, document_id, distance, embedding)`` rows into ``space``'s partition.

    Binary COPY on Django's connection (inside the caller's transaction, if any): one round trip, no per-row
    parsing. Straight into the partition, which spares PostgreSQL routing each row. A vector of another length
    than the space's is refused before anything is sent.
    """
    table = connection.ops.quote_name(partition_name(space))
    columns = ", ".join(name for name, _ in COPY_COLUMNS)
    dimensions, space_id, count = int(space.dimensions), int(space.pk), 0
    with vector_cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in COPY_COLUMNS])
            for chunk_id, collection_id, document_id, distance, embedding in rows:
                vector = np.asarray(embedding, dtype=np.float32)
                if vector.shape != (dimensions,):
                    raise ValueError(
                        f"space {space.name} holds {dimensions}-dimensional vectors, not {vector.shape[-1]}"
                    )
                copy.write_row((chunk_id, space_id, collection_id, document_id, distance, vector))
                count += 1
    return count


def search_space(
    *,
    space: EmbeddingSpace,
    distance: str,
    vector: Sequence[float] | np.ndarray,
    k: int,
    collection_ids: Sequence[int],
    exact: bool = False,
    ef_search: int | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` chunks of ``collection_ids`` nearest to ``vector`` in ``space``: (chunk id, cosine similarity).

    HNSW with an iterative scan (relaxed order, re-sorted) unless ``exact``: then every vector of those
    collections is compared (the expression differs from the index's, so the planner cannot use it), which is
    what the HNSW answer is measured against.
    """
    distance = Distance(distance).value
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != space.dimensions:
        raise ValueError(f"space {space.name} holds {space.dimensions}-dimensional vectors, not {query.shape[0]}")
    operator, dims = OPERATORS[distance], int(space.dimensions)
    expression = "v.embedding" if exact else vector_expression(space, "v.embedding")
    similarity = SIMILARITY[distance].format(d="n.gap")
    statement = f"""
        WITH nearest AS MATERIALIZED (
            SELECT v.chunk_id, {expression} {operator} %s::vector({dims}) AS gap
            FROM {connection.ops.quote_name(PARENT)} v
            WHERE v.space_id = {int(space.pk)} AND v.distance = '{distance}' AND v.collection_id = ANY(%s)
            ORDER BY gap
            LIMIT %s
        )
        SELECT n.chunk_id, {similarity} FROM nearest n ORDER BY n.gap + 0, n.chunk_id
    """
    with transaction.atomic(), vector_cursor() as cursor:
        if not exact:
            cursor.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                [str(min(max(int(ef_search or 100), int(k)), 1000))],
            )
        params: list[Any] = [query, list(collection_ids), int(k)]
        cursor.execute(statement, params)
        return [(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]
