"""Scale-aware HNSW parameters: ``hnsw.ef_search`` from the index's size and k, build parameters from the rows.

An HNSW graph of a fixed m needs a wider search as it grows: on clustered 384-d vectors (bench/search.py)
recall@10 at ef_search 100 is 0.97 at 100k rows but 0.78 at 1M (0.87 at 200). So the search's ef_search is
not a constant: ``ef_search(rows, k)`` is ``HNSW_EF_SEARCH_BASE`` (100) up to ``REFERENCE_ROWS`` (100k),
then grows with √(rows / 100k), less for a denser graph: by (16 / m)² for an index built with m > 16 (317 at 1M
rows for m=16, 141 for the m=24 that ``vector_index`` builds there: recall@10 0.943 at 100 and 0.991 at 317 on
that graph, bench/ef_search.py), capped at pgvector's maximum of 1000, and is at least 2·k (a top 50 needs a
wider beam than a top 10). The rows are the planner's estimate (``pg_class.reltuples`` of the largest HNSW index
of any embedding space's partition, kept by ANALYZE / autovacuum) and m that index's own (its reloptions, 16 when
unset), read at most once per ``ROWS_TTL_SECONDS`` per process, so a search costs no extra round trip.
``HNSW_EF_SEARCH`` > 0 fixes the value instead (the old behaviour).

``build_parameters(rows)``: the index ``manage.py vector_index`` builds: the migrations' m=16,
ef_construction=64 below 500k rows, a denser graph above (m=24 / 128 up to 5M rows, m=32 / 200 beyond), so
that the ef_search above reaches its recall without a much wider search.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

REFERENCE_ROWS = 100_000  # up to here the base ef_search gives recall@10 ≥ 0.95 (0.97 measured at 100k)
REFERENCE_M = 16  # the graph that base is measured on (pgvector's default m, the migrations' indexes)
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
ROWS_TTL_SECONDS = 300.0
# Every embedding space's HNSW indexes (documents.spaces.storage.index_name), as a regular expression on pg_class.
HNSW_INDEXES = r"^documents_chunkvector_s[0-9]+_hnsw_"


@dataclass(frozen=True)
class BuildParameters:
    m: int
    ef_construction: int


def ef_search(rows: int, k: int, m: int = REFERENCE_M) -> int:
    """hnsw.ef_search for a top ``k`` from an index of about ``rows`` vectors built with ``m`` (HNSW_EF_SEARCH > 0:
    that, as is)."""
    k = max(1, k)
    if settings.HNSW_EF_SEARCH > 0:
        return min(settings.HNSW_EF_SEARCH, MAX_EF_SEARCH)
    base = max(1, settings.HNSW_EF_SEARCH_BASE)
    growth = math.sqrt(max(1.0, rows / REFERENCE_ROWS)) * min(1.0, (REFERENCE_M / max(1, m)) ** 2)
    by_rows = math.ceil(base * max(1.0, growth))
    return min(max(by_rows, 2 * k), MAX_EF_SEARCH)


def build_parameters(rows: int) -> BuildParameters:
    """m and ef_construction for an HNSW index over ``rows`` vectors."""
    if rows >= 5_000_000:
        return BuildParameters(m=32, ef_construction=200)
    if rows >= 500_000:
        return BuildParameters(m=24, ef_construction=128)
    return BuildParameters(m=16, ef_construction=64)


_lock = threading.Lock()
_cached: tuple[float, int, int] | None = None  # (monotonic time read, rows, m)


def estimated_rows() -> int:
    """The largest HNSW index's row estimate over every space (0 before its first ANALYZE), cached for
    ROWS_TTL_SECONDS: a search sets ef_search before it knows which spaces it reads, and the largest needs most."""
    return _estimated()[1]


def estimated_m() -> int:
    """The m of the index ``estimated_rows`` reads (REFERENCE_M before there is one), cached alike."""
    return _estimated()[2]


def _estimated() -> tuple[float, int, int]:
    global _cached
    now = time.monotonic()
    cached = _cached
    if cached is not None and now - cached[0] < ROWS_TTL_SECONDS:
        return cached
    read = (now, *read_estimated_index())
    with _lock:
        _cached = read
    return read


def read_estimated_rows(space_id: int | None = None) -> int:
    """The largest HNSW index's row estimate (of every space, or of the space ``space_id``'s partition), read from
    pg_class now (uncached)."""
    return read_estimated_index(space_id)[0]


def read_estimated_index(space_id: int | None = None) -> tuple[int, int]:
    """(row estimate, m) of the largest HNSW index (of every space, or of the space ``space_id``'s partition), read
    from pg_class now (uncached); (0, REFERENCE_M) when there is none."""
    pattern = HNSW_INDEXES if space_id is None else f"^documents_chunkvector_s{int(space_id)}_hnsw_"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT greatest(reltuples, 0)::bigint, (SELECT substring(o FROM '^m=(\\d+)$')::int "
            "FROM unnest(reloptions) o WHERE o LIKE 'm=%%') FROM pg_class WHERE relname ~ %s "
            "ORDER BY reltuples DESC LIMIT 1",
            [pattern],
        )
        row = cursor.fetchone()
    if row is None:
        return 0, REFERENCE_M
    return int(row[0]), int(row[1] or REFERENCE_M)


def forget_rows() -> None:
    """Drop the cached estimate (after an index build, and in tests)."""
    global _cached
    with _lock:
        _cached = None


def search_ef(k: int) -> int:
    """ef_search for a search of ``k`` rows now: the rule on the cached estimate (no lookup when overridden)."""
    if settings.HNSW_EF_SEARCH > 0:
        return ef_search(0, k)
    return ef_search(estimated_rows(), k, estimated_m())
