"""The vector index of each embedding space and distance: HNSW (the default) or IVFFlat, (re)built sized.

HNSW answers best at every size and needs no data to be built, so each space's partition gets it when the
space is created (documents.spaces.storage: one partial expression index per distance in use). IVFFlat builds
faster and smaller, but its lists are k-means centroids of the rows that exist when it is built: pgvector's
README says to create it once the table holds data, with ``lists`` = rows / 1000 up to a million rows and
√rows beyond, and to search ``probes`` = √lists of them (``IVFFLAT_PROBES``, which retrieval applies per
query). A distance has one of the two at a time, so the planner never has to choose between them.

Index builds are sized here rather than by the server's defaults: with PostgreSQL's 64 MB of
``maintenance_work_mem`` the HNSW graph of 100k 384-d vectors no longer fits after 28k rows and the build
takes 3-4 times longer (bench/filtered_search.py); the build also gets the machine's cores as parallel
maintenance workers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from django.db import connection

from documents.exceptions import IndexBuildRefused
from documents.models import ChunkVector, Distance, EmbeddingSpace
from documents.search import tuning
from documents.spaces import default_space, storage

KINDS = ("hnsw", "ivfflat")
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}
# Below this many rows of a distance IVFFlat's k-means has too little to learn from; HNSW is better anyway.
IVFFLAT_MIN_ROWS = 1000


@dataclass(frozen=True)
class Built:
    name: str
    kind: str
    distance: str
    rows: int
    seconds: float
    megabytes: float
    lists: int | None = None
    maintenance_work_mem: str = ""
    workers: int = 0
    m: int | None = None
    ef_construction: int | None = None
    space: str = ""

    @property
    def probes(self) -> int | None:
        return ivfflat_probes(self.lists) if self.lists else None


def index_name(kind: str, distance: str, space: EmbeddingSpace | int) -> str:
    """The name of ``kind``'s index of ``distance`` in ``space``'s partition (HNSW: as storage creates it)."""
    if kind == "hnsw":
        return storage.index_name(space, distance)
    return f"{storage.partition_name(space)}_ivfflat_{distance}"


def ivfflat_name_sql(space_id: str, distance: str) -> str:
    """``index_name("ivfflat", ...)`` as an SQL expression of the columns ``space_id`` and ``distance``: retrieval
    reads the lists of the IVFFlat indexes of the spaces and distances it searches (sql.probes_sql)."""
    return f"'{storage.PARENT}_s' || {space_id} || '_ivfflat_' || {distance}"  # storage.partition_name + ours


def ivfflat_lists(rows: int) -> int:
    """pgvector's rule: rows / 1000 up to a million rows, √rows beyond (at least 1)."""
    return max(1, rows // 1000 if rows <= 1_000_000 else round(math.sqrt(rows)))


def ivfflat_probes(lists: int) -> int:
    """pgvector's starting point for the lists searched per query: √lists."""
    return max(1, round(math.sqrt(lists)))


def sized_memory(rows: int, dimensions: int) -> str:
    """Enough maintenance_work_mem for the whole HNSW graph (the vectors twice over, plus room), in MB."""
    return f"{math.ceil(rows * dimensions * 4 * 2 / 2**20) + 128}MB"


def vector_index_build(
    *, kind: str, distance: str, space: EmbeddingSpace | None = None, lists: int | None = None,
    maintenance_work_mem: str | None = None, workers: int | None = None, m: int | None = None,
    ef_construction: int | None = None,
) -> Built:
    """Build ``kind``'s index for ``distance`` in ``space`` (default: the configured default space), sized, then
    drop the other kind's; reads keep working meanwhile.

    The new index is built before the old one is dropped, so searches always have an index; the build
    takes a SHARE lock on the space's partition (writes to that space wait, reads do not; other spaces go on).
    """
    if kind not in KINDS:
        raise IndexBuildRefused(f"Unknown index type {kind!r}: choose hnsw or ivfflat.")
    if distance not in Distance.values:
        raise IndexBuildRefused(f"Unknown distance {distance!r}: choose one of {', '.join(Distance.values)}.")
    space = space or default_space()
    rows = ChunkVector.objects.filter(space=space, distance=distance).count()
    if kind == "ivfflat" and rows < IVFFLAT_MIN_ROWS and not lists:
        raise IndexBuildRefused(
            f"IVFFlat learns its lists from the rows that exist when it is built, and there are {rows:,} "
            f"{distance} vectors in space {space.name} (at least {IVFFLAT_MIN_ROWS:,} are needed; pass --lists to "
            "build anyway). Keep HNSW, or ingest your documents first."
        )
    memory = maintenance_work_mem or sized_memory(rows, space.dimensions)
    workers = max(0, (os.cpu_count() or 2) - 1) if workers is None else workers
    sized = tuning.build_parameters(rows)
    graph = tuning.BuildParameters(m=m or sized.m, ef_construction=ef_construction or sized.ef_construction)
    name = index_name(kind, distance, space)
    partition = connection.ops.quote_name(storage.partition_name(space))
    expression = storage.vector_expression(space)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, false), "
                       "set_config('max_parallel_maintenance_workers', %s, false)", [memory, str(workers)])
        try:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
            if kind == "hnsw":
                # As storage.create_index builds it, with a denser graph on a large space (tuning.build_parameters).
                cursor.execute(
                    f'CREATE INDEX "{name}" ON {partition} USING hnsw ({expression} {OPCLASSES[distance]}) '
                    f"WITH (m = {int(graph.m)}, ef_construction = {int(graph.ef_construction)}) "
                    f"WHERE distance = '{Distance(distance).value}'"
                )
            else:
                lists = lists or ivfflat_lists(rows)
                cursor.execute(
                    f'CREATE INDEX "{name}" ON {partition} USING ivfflat ({expression} '
                    f"{OPCLASSES[distance]}) WITH (lists = {int(lists)}) WHERE distance = '{Distance(distance).value}'"
                )
            seconds = time.perf_counter() - started
            tuning.forget_rows()
            other = index_name("ivfflat" if kind == "hnsw" else "hnsw", distance, space)
            cursor.execute(f'DROP INDEX IF EXISTS "{other}"')
            cursor.execute(f"ANALYZE {partition}")
            cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
            megabytes = cursor.fetchone()[0] / 2**20
        finally:
            cursor.execute("RESET maintenance_work_mem")
            cursor.execute("RESET max_parallel_maintenance_workers")
    return Built(name=name, kind=kind, distance=distance, rows=rows, seconds=seconds, megabytes=megabytes,
                 lists=lists if kind == "ivfflat" else None, maintenance_work_mem=memory, workers=workers,
                 m=graph.m if kind == "hnsw" else None,
                 ef_construction=graph.ef_construction if kind == "hnsw" else None, space=space.name)
