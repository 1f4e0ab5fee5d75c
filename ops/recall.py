"""The recall of the HNSW indexes, sampled: stored chunk vectors used as queries, the index's top-k against the
exact top-k (a sequential scan), per embedding space and distance. Celery beat runs it nightly (ops.tasks); the
history is RecallSample.

Each space's vectors are a partition of the ChunkVector table with one HNSW index per distance, built on
``(embedding::vector(N))`` (documents.spaces.storage): both sides of the measure name the space as a literal
(partition pruning) and order by that expression, so the index measured is the one searches use. Recall here is
the index's, over the whole partition: no access-control or collection filter narrows either side (a filter
lowers HNSW recall for reasons of its own, which is the search's business).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from documents.models import ChunkVector, Distance, EmbeddingSpace
from documents.search import tuning
from documents.spaces.storage import partition_name, vector_expression
from ops.models import RecallSample

OPERATORS = {Distance.COSINE: "<=>", Distance.L2: "<->", Distance.INNER_PRODUCT: "<#>"}
TIE = 1e-9  # a neighbour as close as the exact k-th one counts: equal distances rank in any order
TABLE = ChunkVector._meta.db_table


@dataclass(frozen=True)
class Neighbour:
    id: int
    distance: float


def _neighbours(
    space: EmbeddingSpace, distance: str, query: str, k: int, *, exact: bool, ef_search: int
) -> list[Neighbour]:
    operator = OPERATORS[Distance(distance)]
    expression, cast = vector_expression(space), f"vector({int(space.dimensions)})"
    # The space and the partial index's predicate as literals (validated values), so the planner can match them.
    sql = (
        f"SELECT chunk_id, {expression} {operator} %s::{cast} AS d FROM {connection.ops.quote_name(TABLE)} "
        f"WHERE space_id = {int(space.pk)} AND distance = '{Distance(distance).value}' "
        f"ORDER BY {expression} {operator} %s::{cast} LIMIT %s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if exact:
            cursor.execute("SELECT set_config('enable_indexscan', 'off', true)")
        else:
            # The index even where the planner would scan a small table: it is the index being measured.
            cursor.execute(
                "SELECT set_config('enable_seqscan', 'off', true), set_config('hnsw.ef_search', %s, true)",
                [str(ef_search)],
            )
        cursor.execute(sql, [query, query, k])
        neighbours = [Neighbour(id=row[0], distance=float(row[1])) for row in cursor.fetchall()]
        # Rolled back (it wrote nothing): set_config(..., true) lasts until the end of the transaction, and
        # inside a caller's transaction that is only undone by rolling the savepoint back.
        transaction.set_rollback(True)
    return neighbours


# Cost: each query's exact top-k is a sequential scan of its space's partition (one distance's rows), so a
# night's sample reads each partition RECALL_SAMPLE_QUERIES times per distance (parallel workers share each scan).
def query_recall(space: EmbeddingSpace, distance: str, query: str, k: int, *, ef_search: int) -> float:
    """Share of the exact top-k the index returns (ties with the exact k-th distance count as found)."""
    exact = _neighbours(space, distance, query, k, exact=True, ef_search=ef_search)
    if not exact:
        return 1.0
    found = _neighbours(space, distance, query, k, exact=False, ef_search=ef_search)
    exact_ids = {n.id for n in exact}
    bound = exact[-1].distance + TIE * max(1.0, abs(exact[-1].distance))
    hits = sum(1 for n in found if n.id in exact_ids or n.distance <= bound)
    return min(hits, len(exact)) / len(exact)


def _sample_queries(space: EmbeddingSpace, distance: str, count: int) -> list[str]:
    """Up to ``count`` random stored vectors of one space and distance; a block sample of the space's partition
    first, so a large one is not read whole."""
    partition = partition_name(space)
    with connection.cursor() as cursor:
        cursor.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(%s)", [partition])
        row = cursor.fetchone()
        if row is None:  # no partition: a space retired, or never written
            return []
        rows_estimate = float(row[0])
        percent = 100.0 if rows_estimate < 10_000 else min(100.0, 100.0 * 20 * count / rows_estimate)
        cursor.execute(
            f"SELECT embedding::text FROM {connection.ops.quote_name(partition)} TABLESAMPLE SYSTEM (%s) "
            "WHERE distance = %s ORDER BY random() LIMIT %s",
            [percent, distance, count],
        )
        return [row[0] for row in cursor.fetchall()]


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * (len(ordered) - 1)))]


def sample_recall(*, queries: int | None = None, k: int = 10) -> list[RecallSample]:
    """Measure each space and distance that has chunk vectors and keep the result; nothing is kept for the others."""
    count = settings.RECALL_SAMPLE_QUERIES if queries is None else queries
    ef_search = tuning.search_ef(k)  # what a search of k rows uses now
    samples = []
    for space in EmbeddingSpace.objects.exclude(status=EmbeddingSpace.Status.RETIRED).order_by("pk"):
        for distance in Distance:
            vectors = _sample_queries(space, distance.value, count)
            if not vectors:
                continue
            recalls = [query_recall(space, distance.value, vector, k, ef_search=ef_search) for vector in vectors]
            samples.append(
                RecallSample.objects.create(
                    space=space,
                    distance=distance.value,
                    queries=len(recalls),
                    k=k,
                    ef_search=ef_search,
                    mean=sum(recalls) / len(recalls),
                    p10=percentile(recalls, 0.1),
                    minimum=min(recalls),
                )
            )
    return samples
