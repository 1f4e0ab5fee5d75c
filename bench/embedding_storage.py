"""Where an embedding space's vectors live: one table with a partial HNSW per space, partitions by space, and more.

    python bench/embedding_storage.py [--quick] [--chunks N] [--queries N]

Issue 14 stores every embedding space (model) in one vector table with an *untyped* pgvector column,
``(chunk_id, space_id, collection_id, document_id, distance, embedding vector)``, searched through one
HNSW expression index per space, ``((embedding::vector(DIM)) vector_cosine_ops)``. This measures, in one
run and at equal settings (m=16, ef_construction=64, the app's ef_search, one maintenance_work_mem, one
parallel maintenance worker), in the database ``ragbench_storage``:

- layouts, each holding space 1 (384-d) for N chunks (100,000 by default; clustered synthetic vectors as
  bench/_data.py draws them, documents of 20 chunks spread at random over 100 collections of ~1% each):
  (a) **one table**, a partial expression HNSW per space (``WHERE space_id = 1``);
  (b) **partitions by space**: the same table LIST-partitioned by ``space_id``, one expression HNSW per
      partition;
  (c) **typed column** (today's ``documents_chunk``): ``embedding vector(384)`` and a plain HNSW;
  (d) **partitions by collection**: the table of (a) HASH-partitioned by ``collection_id`` into 8
      partitions, a partial expression HNSW in each (space 1 only).
- **adding space 2** (256-d, N more rows) to (a) and (b), while a reader (top-10 searches in space 1)
  and a writer (one-row updates in space 1) run on the table and a sampler reads ``pg_stat_activity``
  every 10 ms: (a) binary COPY into the table, then ``CREATE INDEX CONCURRENTLY`` of space 2's partial
  index; (b) a standalone table ``LIKE`` the parent with a ``CHECK (space_id = 2)``, binary COPY,
  ``CREATE INDEX CONCURRENTLY``, ``ATTACH PARTITION``. Rows/s of the COPY, seconds of the build, and per
  step the longest lock wait of any session and the probes' longest statement (against a quiet window
  with nothing running: the noise of 2 shared cores).
- **search** with both spaces present: top-10 in space 1, unfiltered and filtered to one ~1% collection
  (``collection_id = ANY(...)``, ``hnsw.iterative_scan = relaxed_order``) as the planner chooses and with
  the HNSW scan forced (``enable_sort = off``); space 2 unfiltered. p50/p95, recall@10 against exact
  search (numpy over the same float32 vectors), methods interleaved per query.
- **bytes per chunk** of the heap and of each index, per layout and space; and of SciFact abstracts
  (title + abstract, about a 350-token chunk's size, cycled) with a stored tsvector and its GIN index.
- **retiring space 2**: (a) ``DROP INDEX CONCURRENTLY``, ``DELETE`` its rows, ``VACUUM``; (b) ``DETACH
  PARTITION CONCURRENTLY``, ``DROP TABLE``; and creating then dropping an empty partition in place
  (``CREATE TABLE ... PARTITION OF``), which locks the parent ACCESS EXCLUSIVE.

Appends the tables to bench/BENCHMARKS.md (``--quick``: 2,000 chunks, 20 queries, only printed) and ends
with one line of headline figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _data  # noqa: E402

K = 10
DIMS = {1: 384, 2: 256}
M, EF_CONSTRUCTION = 16, 64
COLLECTIONS = 100
HASH_PARTITIONS = 8
WORKERS = 1  # parallel maintenance workers (the leader builds too): 2 shared cores
COLUMNS = "chunk_id, space_id, collection_id, document_id, distance, embedding"
COPY_TYPES = ["int8", "int4", "int8", "int8", "varchar", "vector"]
TABLE = """(
    chunk_id bigint NOT NULL, space_id integer NOT NULL, collection_id bigint NOT NULL,
    document_id bigint NOT NULL, distance varchar(6) NOT NULL DEFAULT 'cosine', embedding {vector} NOT NULL
)"""
LAYOUTS = {
    "a": "(a) one table, partial HNSW per space",
    "b": "(b) partitions by space",
    "c": "(c) typed vector(384) column (today)",
    "d": f"(d) {HASH_PARTITIONS} hash partitions by collection",
}


@dataclass
class Space:
    vectors: np.ndarray
    queries: np.ndarray
    chunk_ids: np.ndarray
    collection_of: np.ndarray
    document_of: np.ndarray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 chunks, 20 queries: not recorded (CI)")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--label", default="", help="added to the recorded title")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.queries = min(args.chunks, 2_000), 20
        Probes.quiet_seconds, Probes.hold_seconds = 0.5, 0.3
    _common.require_shared("data/scifact/corpus.jsonl")
    _common.setup_django("ragbench_storage", LOG_LEVEL="WARNING", DEBUG="false", SECRET_KEY=secrets.token_urlsafe(32))
    from documents.search import indexes, tuning

    started = time.perf_counter()
    n = args.chunks
    ef = tuning.ef_search(n, K)
    memory = indexes.sized_memory(n, max(DIMS.values()))  # the app's rule, the same for every build
    spaces = _spaces(n, args.queries)
    ddl = Session(memory)
    ddl.reset()

    # Space 1 in every layout, its index built after the load (as a bulk load should be).
    _data.progress(f"== loading {n:,} chunks of space 1 into four layouts ...")
    builds, sizes = {}, {}
    ddl.run(f"CREATE TABLE one_table {TABLE.format(vector='vector')}")
    ddl.run("CREATE TABLE by_space " + TABLE.format(vector="vector") + " PARTITION BY LIST (space_id)")
    ddl.run("CREATE TABLE by_space_1 PARTITION OF by_space FOR VALUES IN (1)")
    ddl.run(f"CREATE TABLE typed {TABLE.format(vector=f'vector({DIMS[1]})')}")
    ddl.run("CREATE TABLE by_collection " + TABLE.format(vector="vector") + " PARTITION BY HASH (collection_id)")
    for r in range(HASH_PARTITIONS):
        ddl.run(
            f"CREATE TABLE by_collection_{r} PARTITION OF by_collection "
            f"FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {r})"
        )
    for table in ("one_table", "by_space", "typed", "by_collection"):
        # A partitioned table's unique keys must hold its partition key: by collection, collection_id joins the key.
        key = {
            "typed": "PRIMARY KEY (chunk_id)",
            "by_collection": "PRIMARY KEY (collection_id, chunk_id, space_id)",
        }.get(table, "PRIMARY KEY (chunk_id, space_id)")
        ddl.run(f"ALTER TABLE {table} ADD {key}")
        ddl.run(f"CREATE INDEX ON {table} (collection_id, space_id)")
        ddl.copy(table, _rows(spaces[1], 1))
        ddl.run(f"VACUUM ANALYZE {table}")
    builds["a", 1] = ddl.build("one_table_hnsw_1", "one_table", _expression(1), "WHERE space_id = 1")
    builds["b", 1] = ddl.build("by_space_1_hnsw", "by_space_1", _expression(1), "")
    builds["c", 1] = ddl.build("typed_hnsw", "typed", "embedding vector_cosine_ops", "")
    # A partitioned table's index cannot be built CONCURRENTLY: the parent's index, built in place.
    builds["d", 1] = ddl.build(
        "by_collection_hnsw_1", "by_collection", _expression(1), "WHERE space_id = 1", concurrently=False
    )
    for table in ("one_table", "by_space", "typed", "by_collection"):
        ddl.run(f"ANALYZE {table}")
    sizes["a", 1] = ddl.sizes("one_table", {"one_table_hnsw_1"}, n)
    sizes["b", 1] = ddl.sizes("by_space_1", {"by_space_1_hnsw"}, n)
    sizes["c", 1] = ddl.sizes("typed", {"typed_hnsw"}, n)
    sizes["d", 1] = ddl.sizes("by_collection", {"by_collection_hnsw_1"}, n)

    # Space 2 into (a) and (b), with a reader, a writer and a lock sampler on the table.
    _data.progress(f"== adding space 2 ({n:,} × {DIMS[2]}-d) with concurrent probes ...")
    lifecycle, copies = [], {}
    with Probes("one_table", spaces[1]) as probes:
        copies["a"] = probes.step(
            "COPY space 2's rows into the table", lambda: ddl.copy("one_table", _rows(spaces[2], 2))
        )
        builds["a", 2] = probes.step(
            "CREATE INDEX CONCURRENTLY (partial, space 2)",
            lambda: ddl.build("one_table_hnsw_2", "one_table", _expression(2), "WHERE space_id = 2"),
        )
        probes.step("ANALYZE", lambda: ddl.run("ANALYZE one_table"))
        lifecycle += probes.rows("a", "add space 2")
    with Probes("by_space", spaces[1]) as probes:
        probes.step(
            "CREATE TABLE … (LIKE parent INCLUDING ALL), CHECK (space_id = 2)",
            lambda: ddl.run(
                "CREATE TABLE by_space_2 (LIKE by_space INCLUDING ALL); "
                "ALTER TABLE by_space_2 ADD CONSTRAINT by_space_2_space CHECK (space_id = 2)"
            ),
        )
        copies["b"] = probes.step(
            "COPY space 2's rows into the new table", lambda: ddl.copy("by_space_2", _rows(spaces[2], 2))
        )
        builds["b", 2] = probes.step(
            "CREATE INDEX CONCURRENTLY (on the new table)",
            lambda: ddl.build("by_space_2_hnsw", "by_space_2", _expression(2), ""),
        )
        probes.step(
            "ATTACH PARTITION … FOR VALUES IN (2)",
            lambda: ddl.run("ALTER TABLE by_space ATTACH PARTITION by_space_2 FOR VALUES IN (2)"),
        )
        probes.step("ANALYZE", lambda: ddl.run("ANALYZE by_space"))
        lifecycle += probes.rows("b", "add space 2")
    sizes["a", 2] = ddl.sizes("one_table", {"one_table_hnsw_2"}, n, heap=False)
    sizes["b", 2] = ddl.sizes("by_space_2", {"by_space_2_hnsw"}, n)

    _data.progress(f"== searching: {args.queries} queries, ef_search={ef} ...")
    search_rows, figures, plans = _search(spaces, ef)
    _data.progress("== full-text: SciFact abstracts with a stored tsvector and GIN ...")
    text = _full_text(ddl, n)

    _data.progress("== retiring space 2 with concurrent probes ...")
    with Probes("one_table", spaces[1]) as probes:
        probes.step("DROP INDEX CONCURRENTLY (space 2)", lambda: ddl.run("DROP INDEX CONCURRENTLY one_table_hnsw_2"))
        probes.step("DELETE space 2's rows", lambda: ddl.run("DELETE FROM one_table WHERE space_id = 2"))
        probes.step("VACUUM (the dead rows)", lambda: ddl.run("VACUUM one_table"))
        probes.step_behind_reader(
            "CREATE INDEX CONCURRENTLY (an empty space 3)",
            lambda: ddl.build(
                "one_table_hnsw_3", "one_table", "(embedding::vector(128)) vector_cosine_ops", "WHERE space_id = 3"
            ),
        )
        probes.step_behind_reader(
            "DROP INDEX CONCURRENTLY (space 3)", lambda: ddl.run("DROP INDEX CONCURRENTLY one_table_hnsw_3")
        )
        lifecycle += probes.rows("a", "retire space 2; an empty space 3")
    with Probes("by_space", spaces[1]) as probes:
        probes.step(
            "DETACH PARTITION CONCURRENTLY",
            lambda: ddl.run("ALTER TABLE by_space DETACH PARTITION by_space_2 CONCURRENTLY"),
        )
        probes.step("DROP TABLE (the detached partition)", lambda: ddl.run("DROP TABLE by_space_2"))
        probes.step(
            "CREATE TABLE … PARTITION OF … IN (3) (empty, in place)",
            lambda: ddl.run("CREATE TABLE by_space_3 PARTITION OF by_space FOR VALUES IN (3)"),
        )
        probes.step("DROP TABLE (an attached partition)", lambda: ddl.run("DROP TABLE by_space_3"))
        ddl.run("CREATE TABLE by_space_4 (LIKE by_space INCLUDING ALL)")
        ddl.run("ALTER TABLE by_space_4 ADD CONSTRAINT by_space_4_space CHECK (space_id = 4)")
        probes.step_behind_reader(
            "ATTACH PARTITION (an empty space 4)",
            lambda: ddl.run("ALTER TABLE by_space ATTACH PARTITION by_space_4 FOR VALUES IN (4)"),
        )
        probes.step_behind_reader(
            "DETACH PARTITION CONCURRENTLY (space 4)",
            lambda: ddl.run("ALTER TABLE by_space DETACH PARTITION by_space_4 CONCURRENTLY"),
        )
        ddl.run("DROP TABLE by_space_4")
        probes.step_behind_reader(
            "CREATE TABLE … PARTITION OF … IN (3) (empty, in place)",
            lambda: ddl.run("CREATE TABLE by_space_3 PARTITION OF by_space FOR VALUES IN (3)"),
        )
        probes.step_behind_reader("DROP TABLE (an attached partition)", lambda: ddl.run("DROP TABLE by_space_3"))
        lifecycle += probes.rows("b", "retire space 2; empty spaces 3 and 4")
    server = ddl.settings()
    ddl.reset()  # the tables hold ~1.5 GB at 100k: none is kept for the next run
    ddl.close()
    seconds = time.perf_counter() - started
    _report(args, n, ef, memory, server, builds, sizes, copies, lifecycle, search_rows, figures, plans, text, seconds)


def _spaces(n: int, queries: int) -> dict[int, Space]:
    """Space 1 and space 2 of the same chunks: one document and collection layout, vectors of each dimension."""
    rng = np.random.default_rng(7)
    first = _data.clustered(n=n, queries=queries, dim=DIMS[1], seed=1)
    second = _data.clustered(n=n, queries=queries, dim=DIMS[2], seed=2)
    documents = int(first.doc_of.max()) + 1
    doc_collection = rng.integers(1, COLLECTIONS + 1, size=documents)
    chunk_ids = np.arange(1, n + 1, dtype=np.int64)
    return {
        space: Space(
            vectors=corpus.vectors,
            queries=corpus.queries,
            chunk_ids=chunk_ids,
            collection_of=doc_collection[first.doc_of],
            document_of=first.doc_of + 1,
        )
        for space, corpus in ((1, first), (2, second))
    }


def _rows(space: Space, space_id: int):
    for i in range(len(space.vectors)):
        yield (
            int(space.chunk_ids[i]),
            space_id,
            int(space.collection_of[i]),
            int(space.document_of[i]),
            "cosine",
            space.vectors[i],
        )


def _expression(space_id: int) -> str:
    return f"(embedding::vector({DIMS[space_id]})) vector_cosine_ops"


def _connect():
    import psycopg
    from pgvector.psycopg import register_vector

    # No prepared statements: a generic plan could not prune partitions or see the collection asked for.
    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)
    register_vector(conn)
    return conn


class Session:
    """The connection that loads, builds and alters: the same maintenance settings for every build."""

    def __init__(self, memory: str) -> None:
        self.conn = _connect()
        self.memory = memory
        self.notices: list[str] = []
        self.conn.add_notice_handler(lambda diagnostic: self.notices.append(diagnostic.message_primary))

    def reset(self) -> None:
        for table in (
            "one_table",
            "by_space",
            "by_space_2",
            "by_space_3",
            "by_space_4",
            "typed",
            "by_collection",
            "chunk_text",
        ):
            self.run(f"DROP TABLE IF EXISTS {table} CASCADE")
        self.run(f"SET maintenance_work_mem = '{self.memory}'")
        self.run(f"SET max_parallel_maintenance_workers = {WORKERS}")

    def run(self, sql: str) -> None:
        self.conn.execute(sql)

    def copy(self, table: str, rows) -> float:
        """Binary COPY of ``rows`` in one statement; rows per second."""
        started, count = time.perf_counter(), 0
        with (
            self.conn.cursor() as cursor,
            cursor.copy(f"COPY {table} ({COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
                count += 1
        return count / (time.perf_counter() - started)

    def build(self, name: str, table: str, expression: str, where: str, *, concurrently: bool = True) -> float:
        """Seconds to build an HNSW index (m, ef_construction as the app's migrations)."""
        started = time.perf_counter()
        self.run(
            f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}{name} ON {table} USING hnsw ({expression}) "
            f"WITH (m = {M}, ef_construction = {EF_CONSTRUCTION}) {where}"
        )
        return time.perf_counter() - started

    def sizes(self, table: str, hnsw: set[str], rows: int, *, heap: bool = True) -> dict[str, float]:
        """Bytes per row of the heap (with TOAST), of the named HNSW indexes and of the other indexes.

        A partitioned table's sizes are its partitions' (pg_partition_tree); an index of a partitioned
        table is its partitions' indexes.
        """
        tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT relid::oid FROM pg_partition_tree(%s::regclass) WHERE isleaf", [table]
            ).fetchall()
        ]
        tables = tables or [self.conn.execute("SELECT %s::regclass::oid", [table]).fetchone()[0]]  # not partitioned
        heap_bytes = sum(self.conn.execute("SELECT pg_table_size(%s)", [t]).fetchone()[0] for t in tables)
        hnsw_bytes = other = 0
        for parent_name, size in self.conn.execute(
            """SELECT coalesce(parent.relname, i.relname), pg_relation_size(x.indexrelid)
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                 LEFT JOIN pg_inherits h ON h.inhrelid = x.indexrelid
                 LEFT JOIN pg_class parent ON parent.oid = h.inhparent
                WHERE x.indrelid = ANY(%s)""",
            [tables],
        ).fetchall():
            if parent_name in hnsw:
                hnsw_bytes += size
            elif parent_name.endswith(("_hnsw_1", "_hnsw_2", "_hnsw")):
                continue  # another space's index
            else:
                other += size
        return {"heap": heap_bytes / rows if heap else float("nan"), "hnsw": hnsw_bytes / rows, "btree": other / rows}

    def settings(self) -> dict[str, str]:
        return {
            name: self.conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers")
        }

    def close(self) -> None:
        self.conn.close()


@dataclass
class Probes:
    """A reader and a writer working on ``table`` in space 1, and a sampler of lock waits, while steps run.

    Each probe records every statement's (start, end); the sampler reads ``pg_stat_activity`` every 10 ms
    for sessions of this database waiting on a lock (``wait_event_type = 'Lock'``) and how long their
    statement has run. A step's figures are over its window; a quiet window before the first step
    shows what 2 shared cores do to the probes with nothing else running.
    """

    table: str
    space: Space
    quiet_seconds = 2.0  # class settings, not fields: --quick shortens them
    hold_seconds = 1.0  # how long step_behind_reader's transaction stays open
    windows: list = field(default_factory=list)
    events: dict = field(default_factory=lambda: {"reader": [], "writer": []})
    waits: list = field(default_factory=list)  # (time, seconds waited, probe?, query)

    def __enter__(self) -> Probes:
        self.stopping = threading.Event()
        self.pids: set[int] = set()
        ready = threading.Barrier(4)
        self.threads = [
            threading.Thread(target=target, args=(ready,), daemon=True)
            for target in (self._reader, self._writer, self._sampler)
        ]
        for thread in self.threads:
            thread.start()
        ready.wait()
        self.step("nothing (quiet window: the noise floor)", lambda: time.sleep(self.quiet_seconds))
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def step(self, name: str, action):
        started = time.perf_counter()
        result = action()
        self.windows.append((name, started, time.perf_counter()))
        return result

    def step_behind_reader(self, name: str, action):
        """``action`` while another session holds a read transaction on the table open for ``seconds``.

        A statement that needs ACCESS EXCLUSIVE queues behind that transaction, and every later
        statement on the table queues behind it: the hazard of in-place DDL on a busy table.
        """
        holding, seconds = threading.Event(), self.hold_seconds

        def hold() -> None:
            conn = _connect()
            with conn.transaction():
                conn.execute(f"SELECT 1 FROM {self.table} LIMIT 1").fetchall()
                holding.set()
                time.sleep(seconds)
            conn.close()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        holding.wait()
        result = self.step(f"{name}, behind a {seconds:g} s read transaction", action)
        holder.join()
        return result

    def _loop(self, ready, kind: str, statement: str, params) -> None:
        conn = _connect()
        conn.execute("SET hnsw.ef_search = 100")
        self.pids.add(conn.info.backend_pid)
        ready.wait()
        rng = np.random.default_rng(len(kind))
        while not self.stopping.is_set():
            started = time.perf_counter()
            conn.execute(statement, params(rng)).fetchall() if kind == "reader" else conn.execute(
                statement, params(rng)
            )
            self.events[kind].append((started, time.perf_counter()))
            time.sleep(0.005)
        conn.close()

    def _reader(self, ready) -> None:
        queries = self.space.queries
        self._loop(
            ready,
            "reader",
            f"SELECT chunk_id FROM {self.table} WHERE space_id = 1 "
            f"ORDER BY embedding::vector({DIMS[1]}) <=> %s LIMIT {K}",
            lambda rng: [queries[rng.integers(len(queries))]],
        )

    def _writer(self, ready) -> None:
        ids = self.space.chunk_ids
        self._loop(
            ready,
            "writer",
            f"UPDATE {self.table} SET document_id = document_id WHERE space_id = 1 AND chunk_id = %s",
            lambda rng: [int(ids[rng.integers(len(ids))])],
        )

    def _sampler(self, ready) -> None:
        conn = _connect()
        ready.wait()
        while not self.stopping.is_set():
            for pid, waited, query in conn.execute(
                """SELECT pid, extract(epoch FROM clock_timestamp() - query_start)::float8, left(query, 60)
                     FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"""
            ).fetchall():
                self.waits.append((time.perf_counter(), waited, pid in self.pids, query))
            time.sleep(0.01)
        conn.close()

    def rows(self, layout: str, phase: str) -> list[dict]:
        result = []
        for name, start, end in self.windows:

            def longest(events, start=start, end=end):
                overlapping = [e - s for s, e in events if s < end and e > start]
                return max(overlapping, default=0.0) * 1000

            in_window = [w for w in self.waits if start <= w[0] <= end]
            result.append(
                {
                    "layout": layout,
                    "phase": phase,
                    "step": name,
                    "seconds": end - start,
                    "reader_max_ms": longest(self.events["reader"]),
                    "writer_max_ms": longest(self.events["writer"]),
                    "probe_wait_ms": max((w[1] for w in in_window if w[2]), default=0.0) * 1000,
                    "ddl_wait_ms": max((w[1] for w in in_window if not w[2]), default=0.0) * 1000,
                    "probes": sum(1 for s, e in self.events["reader"] + self.events["writer"] if s < end and e > start),
                }
            )
        return result


def _search(spaces: dict[int, Space], ef: int):
    """Interleaved top-10 searches per layout; (table rows, {method: figures}, {layout: plan of the filtered query})."""
    one, two = spaces[1], spaces[2]
    rare = 1  # a collection of ~1% of the chunks
    rare_mask = one.collection_of == rare
    truth = {
        (1, False): one.chunk_ids[_data.exact_top(one.vectors, one.queries, K)],
        (1, True): one.chunk_ids[_data.exact_top(one.vectors, one.queries, K, rare_mask)],
        (2, False): two.chunk_ids[_data.exact_top(two.vectors, two.queries, K)],
    }
    tables = {"a": "one_table", "b": "by_space", "c": "typed", "d": "by_collection"}
    connections, methods, spec = {}, {}, {}
    for forced in (False, True):
        conn = connections[forced] = _connect()
        conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        if forced:
            conn.execute("SET enable_sort = off")  # the HNSW scan itself, not the planner's exact sort

    def query(layout: str, space_id: int, filtered: bool) -> str:
        typed = layout == "c"
        where = [] if typed else [f"space_id = {space_id}"]
        if filtered:
            where.append("collection_id = ANY(%s)")
        distance = "embedding" if typed else f"embedding::vector({DIMS[space_id]})"
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return f"SELECT chunk_id FROM {tables[layout]} {clause}ORDER BY {distance} <=> %s LIMIT {K}"

    def method(conn, sql: str, queries: np.ndarray, filtered: bool):
        return lambda i: [r[0] for r in conn.execute(sql, ([[rare]] if filtered else []) + [queries[i]]).fetchall()]

    for layout in tables:
        for space_id, filtered, forced, label in (
            (1, False, False, "space 1, unfiltered"),
            (1, True, False, "space 1, 1% collection, planner's choice"),
            (1, True, True, "space 1, 1% collection, HNSW forced"),
            (2, False, False, "space 2 (256-d), unfiltered"),
        ):
            if space_id == 2 and layout not in ("a", "b"):
                continue
            name = f"{LAYOUTS[layout]} | {label}"
            sql = query(layout, space_id, filtered)
            queries = spaces[space_id].queries
            methods[name] = method(connections[forced], sql, queries, filtered)
            spec[name] = (layout, space_id, filtered, forced, sql)
    plans = {}
    for layout in tables:
        sql = query(layout, 1, True)
        plan = (
            connections[False].execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, [[rare], one.queries[0]]).fetchone()[0]
        )
        plans[layout] = _data.plan_shape(plan)
    unfiltered = connections[False].execute("EXPLAIN (FORMAT JSON) " + query("d", 1, False), [one.queries[0]])
    plans["d unfiltered"] = _data.plan_shape(unfiltered.fetchone()[0])
    timings = _data.interleaved(methods, len(one.queries))
    for conn in connections.values():
        conn.close()
    rows, figures = [], {}
    for name, (seconds, ids) in timings.items():
        layout, space_id, filtered, forced, _ = spec[name]
        p50, p95, _ = _data.percentiles(seconds)
        recall = _data.recall(ids, truth[space_id, filtered])
        returned = float(np.mean([len(i) for i in ids]))
        figures[name] = {"p50": p50, "p95": p95, "recall": recall, "returned": returned}
        layout_name, label = name.split(" | ")
        rows.append([layout_name, label, f"{recall:.3f}", f"{returned:.1f}", f"{p50:.2f}", f"{p95:.2f}"])
    return rows, figures, {"rare_share": float(rare_mask.mean()), **plans}


def _full_text(ddl: Session, n: int) -> dict[str, float]:
    """SciFact abstracts (title + text) as n chunks with a stored English tsvector: bytes per chunk, GIN build s."""
    import json

    abstracts = []
    with _common.require_shared("data/scifact/corpus.jsonl").open() as corpus:
        for line in corpus:
            record = json.loads(line)
            if record["text"].strip():
                abstracts.append(f"{record['title']}\n{record['text']}")
    ddl.run(
        "CREATE TABLE chunk_text (chunk_id bigint PRIMARY KEY, text text NOT NULL, "
        "search_vector tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)"
    )
    started = time.perf_counter()
    with ddl.conn.cursor() as cursor, cursor.copy("COPY chunk_text (chunk_id, text) FROM STDIN") as copy:
        for i in range(n):
            copy.write_row((i + 1, abstracts[i % len(abstracts)]))
    load = time.perf_counter() - started
    ddl.run("VACUUM ANALYZE chunk_text")
    started = time.perf_counter()
    ddl.run("CREATE INDEX chunk_text_gin ON chunk_text USING gin (search_vector)")
    build = time.perf_counter() - started
    size = ddl.conn.execute(
        "SELECT pg_table_size('chunk_text'), pg_relation_size('chunk_text_gin'), pg_relation_size('chunk_text_pkey'), "
        "avg(array_length(regexp_split_to_array(text, '\\s+'), 1)), avg(length(search_vector)) FROM chunk_text"
    ).fetchone()
    ddl.run("DROP TABLE chunk_text")
    return {
        "heap": size[0] / n,
        "gin": size[1] / n,
        "pkey": size[2] / n,
        "words": float(size[3]),
        "lexemes": float(size[4]),
        "load_rows_s": n / load,
        "gin_build_s": build,
        "distinct": min(n, len(abstracts)),
    }


def table_md(table: list[list[str]]) -> str:
    """A Markdown table (header first), for the extra tables in the recorded notes."""
    header, *rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _report(
    args, n, ef, memory, server, builds, sizes, copies, lifecycle, search_rows, figures, plans, text, seconds
) -> None:
    search_table = [["layout", "search", "recall@10", "returned (k=10)", "p50 ms", "p95 ms"], *search_rows]
    lock_rows = [
        [
            "layout",
            "phase",
            "step",
            "seconds",
            "longest lock wait, probes (ms)",
            "longest lock wait, DDL session (ms)",
            "reader max ms",
            "writer max ms",
            "probe statements",
        ]
    ]
    for row in lifecycle:
        lock_rows.append(
            [
                LAYOUTS[row["layout"]],
                row["phase"],
                row["step"],
                f"{row['seconds']:.2f}",
                f"{row['probe_wait_ms']:.0f}",
                f"{row['ddl_wait_ms']:.0f}",
                f"{row['reader_max_ms']:.0f}",
                f"{row['writer_max_ms']:.0f}",
                str(row["probes"]),
            ]
        )
    size_rows = [
        [
            "layout",
            "space",
            "heap B/chunk (with TOAST)",
            "HNSW B/chunk",
            "B-tree (key, collection) B/chunk",
            "HNSW build s",
            "space 2 COPY rows/s",
        ]
    ]
    for (layout, space_id), size in sizes.items():
        heap = "" if np.isnan(size["heap"]) else f"{size['heap']:,.0f}"
        size_rows.append(
            [
                LAYOUTS[layout],
                f"{space_id} ({DIMS[space_id]}-d)",
                heap,
                f"{size['hnsw']:,.0f}",
                "" if space_id == 2 and layout == "a" else f"{size['btree']:,.0f}",
                f"{builds[layout, space_id]:.1f}",
                f"{copies[layout]:,.0f}" if space_id == 2 else "",
            ]
        )
    size_rows.append(
        [
            "SciFact abstracts + stored tsvector",
            "—",
            f"{text['heap']:,.0f}",
            f"GIN {text['gin']:,.0f}",
            f"{text['pkey']:,.0f}",
            f"GIN {text['gin_build_s']:.1f}",
            "",
        ]
    )
    notes = [
        "Sizes, build times and the space-2 backfill (binary COPY in one statement, the table's B-trees present, "
        "HNSW indexes built after):\n\n" + table_md(size_rows),
        "Adding and retiring a space while a reader (top-10 in space 1, every 5 ms) and a writer (one-row UPDATE in "
        "space 1, every 5 ms) work on the table; lock waits sampled from pg_stat_activity every 10 ms (0: none "
        "seen); reader/writer max: the slowest probe statement overlapping the step (CPU contention included: "
        "compare with the quiet window):\n\n" + table_md(lock_rows),
        "Plans of the 1% filtered query, planner's choice (EXPLAIN ANALYZE, first query): "
        + "; ".join(f"{LAYOUTS[k]}: {plans[k]}" for k in ("a", "b", "c", "d"))
        + f". Unfiltered, (d): {plans['d unfiltered']}.",
        f"The filter's collection holds {plans['rare_share']:.2%} of the chunks (100 collections, whole documents of "
        f"20 chunks at random). Full-text rows: {text['distinct']:,} SciFact abstracts (title + abstract, "
        f"{text['words']:.0f} words, {text['lexemes']:.0f} distinct lexemes on average) cycled to {n:,} rows; "
        f"loaded at {text['load_rows_s']:,.0f} rows/s (text COPY, the tsvector computed on insert).",
    ]
    title = (
        "Embedding spaces: one table with partial HNSW per space vs partitions by space vs a typed column, "
        f"and partitions by collection (bench/embedding_storage.py{', ' + args.label if args.label else ''})"
    )
    settings_line = (
        f"{n:,} chunks per space (space 1: 384-d, space 2: 256-d; clustered synthetic vectors, L2-normalised), "
        f"{args.queries} queries, k={K}; every HNSW "
        f"m={M}, ef_construction={EF_CONSTRUCTION}, cosine, built after the load with maintenance_work_mem={memory}, "
        f"max_parallel_maintenance_workers={WORKERS} (CREATE INDEX CONCURRENTLY except (d)'s partitioned index); "
        f"search hnsw.ef_search={ef} (the app's at this size), hnsw.iterative_scan=relaxed_order, one client, "
        f"methods interleaved per query, no prepared statements; server shared_buffers={server['shared_buffers']}; "
        f"whole run {seconds / 60:.1f} min."
    )
    _common.report(args.quick, title, settings_line, search_table, notes="\n\n".join(notes))
    if args.quick:
        print(table_md(size_rows))
        print(table_md(lock_rows))

    def fig(layout: str, label: str) -> dict:
        return figures[f"{LAYOUTS[layout]} | {label}"]

    headline = {"chunks": n, "ef_search": ef}
    for layout in "abcd":
        headline[f"{layout}_p50_ms"] = fig(layout, "space 1, unfiltered")["p50"]
        headline[f"{layout}_recall"] = fig(layout, "space 1, unfiltered")["recall"]
        headline[f"{layout}_filtered_p50_ms"] = fig(layout, "space 1, 1% collection, planner's choice")["p50"]
        headline[f"{layout}_filtered_recall"] = fig(layout, "space 1, 1% collection, planner's choice")["recall"]
    for layout in "ab":
        headline[f"{layout}_copy_rows_s"] = copies[layout]
        headline[f"{layout}_build_2_s"] = builds[layout, 2]
        headline[f"{layout}_probe_wait_ms"] = max(r["probe_wait_ms"] for r in lifecycle if r["layout"] == layout)
    headline["a_bytes_per_chunk"] = sizes["a", 1]["heap"] + sizes["a", 1]["hnsw"]
    headline["gin_bytes_per_chunk"] = text["gin"]
    print(
        " ".join(
            f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}" for key, value in headline.items()
        )
    )


if __name__ == "__main__":
    main()
