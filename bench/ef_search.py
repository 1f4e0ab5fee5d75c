"""The scale-aware ef_search rule against fixed settings, side by side with FAISS HNSW at the same recall.

    python bench/ef_search.py [--quick] [--n 200000] [--queries 300]

Clustered synthetic 384-d unit vectors (bench/_data.py) in a plain table of the database ``ragbench_ef``
with pgvector's HNSW index as the app builds it (``documents.search.tuning.build_parameters(n)``, i.e. m=16,
ef_construction=64 below 500k rows; maintenance_work_mem sized as ``manage.py vector_index`` sizes it). The
same queries, interleaved (bench/_data.interleaved), at:

- ef_search 40 (pgvector's default), 100 (the app's fixed value before the rule), the rule's choice
  for this many rows, k=10 and the graph's m (``tuning.ef_search``, what a search with HNSW_EF_SEARCH unset now
  uses), and a ladder between them (the smallest ef_search reaching recall@10 0.95 is named);
- FAISS ``IndexHNSWFlat`` (same M / efConstruction, one thread per query) at the smallest efSearch of a
  ladder whose recall@10 reaches the rule's recall in PostgreSQL (the algorithmic floor at equal recall).

recall@10 against numpy brute force; p50/p95 per query (bare SQL, prepared, binary vector, autocommit).
Also prints the rule's values at 1M and 10M rows — those sizes are not run here (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _data  # noqa: E402

K = 10
TABLE = "ef_bench"
FAISS_LADDER = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000)
LADDER = (60, 80, 120, 140, 160, 200)  # ef_search values timed besides the named ones (the recall/latency curve)
TARGET_RECALL = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 vectors, 30 queries: no record (CI)")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the table and its index from an earlier run of the same --n (and keep them after)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 3_000, 30
    _common.require_shared("data/scifact/corpus.jsonl")
    _common.setup_django("ragbench_ef", LOG_LEVEL="WARNING", HNSW_EF_SEARCH="0")
    from django.conf import settings

    from documents.search import indexes, tuning

    started = time.perf_counter()
    corpus = _data.clustered(n=args.n, queries=args.queries)
    vectors, queries = corpus.vectors.astype(np.float32), corpus.queries.astype(np.float32)
    n, dim = vectors.shape
    truth = _data.exact_top(vectors, queries, K)  # row numbers = ids
    graph = tuning.build_parameters(n)
    auto = tuning.ef_search(n, K, graph.m)
    conn = _common.vector_connection()
    reused = args.reuse and _loaded(conn, n)
    build_seconds = float("nan")
    if not reused:
        _data.progress(f"loading {n:,} vectors ...")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, embedding vector({dim}))")
        with conn.cursor().copy(f"COPY {TABLE} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row((i, vector))
        memory = indexes.sized_memory(n, dim)
        _data.progress(f"building HNSW m={graph.m} ef_construction={graph.ef_construction} ({memory}) ...")
        conn.execute(f"SET maintenance_work_mem = '{memory}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {max(1, (os.cpu_count() or 2) - 1)}")
        build = time.perf_counter()
        conn.execute(
            f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {graph.m}, ef_construction = {graph.ef_construction})"
        )
        build_seconds = time.perf_counter() - build
        conn.execute(f"ANALYZE {TABLE}")
    index_mb = conn.execute(
        "SELECT pg_relation_size(indexrelid) / 1048576.0 FROM pg_index WHERE indrelid = %s::regclass "
        "AND NOT indisprimary", [TABLE]).fetchone()[0]
    shared_buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
    # The index into shared_buffers before timing, as a server that has been answering searches has it.
    _data.progress("reading the table and index into shared_buffers (pg_prewarm) ...")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    conn.execute(
        "SELECT pg_prewarm(indexrelid) FROM pg_index WHERE indrelid = %s::regclass AND NOT indisprimary", [TABLE])
    conn.execute("SELECT pg_prewarm(%s::regclass)", [TABLE])

    efs = {"pgvector default": 40, "fixed (app before)": 100, "auto (rule)": auto}
    for ef in LADDER:
        if ef not in efs.values():
            efs[f"ladder {ef}"] = ef
    efs = dict(sorted(efs.items(), key=lambda item: item[1]))
    connections = {}
    for name, ef in efs.items():
        connections[name] = _common.vector_connection()
        connections[name].execute(f"SET hnsw.ef_search = {int(ef)}")
    sql = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %b LIMIT {K}"

    def pg(name: str):
        return lambda i: [row[0] for row in connections[name].execute(sql, [queries[i]], prepare=True).fetchall()]

    _data.progress(f"timing {len(queries)} queries at ef_search {sorted(set(efs.values()))} ...")
    timed = _data.interleaved({name: pg(name) for name in efs}, len(queries))
    results = {name: (_data.recall(ids, truth), *_data.percentiles(seconds)) for name, (seconds, ids) in timed.items()}

    import faiss

    _data.progress("building FAISS IndexHNSWFlat ...")
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(dim, graph.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = graph.ef_construction
    faiss_build = time.perf_counter()
    index.add(vectors)
    faiss_build_seconds = time.perf_counter() - faiss_build
    faiss.omp_set_num_threads(1)
    target = results["auto (rule)"][0]
    faiss_ef = FAISS_LADDER[-1]
    for ef in FAISS_LADDER:
        index.hnsw.efSearch = ef
        if _data.recall(index.search(queries, K)[1].tolist(), truth) >= target:
            faiss_ef = ef
            break
    index.hnsw.efSearch = faiss_ef
    faiss_timed = _data.interleaved(
        {"faiss": lambda i: index.search(queries[i : i + 1], K)[1][0].tolist()}, len(queries)
    )
    seconds, ids = faiss_timed["faiss"]
    results["FAISS HNSW at the rule's recall"] = (_data.recall(ids, truth), *_data.percentiles(seconds))
    efs["FAISS HNSW at the rule's recall"] = faiss_ef

    reaching = [name for name, result in results.items() if name in efs and not name.startswith("FAISS")
                and result[0] >= TARGET_RECALL]
    smallest = min(reaching, key=lambda name: efs[name]) if reaching else None
    table = [["setting", "ef_search", "recall@10", "p50 ms", "p95 ms", "QPS (1 client)"]]
    for name, (recall, p50, p95, qps) in results.items():
        label = f"{name} (smallest reaching {TARGET_RECALL})" if name == smallest else name
        table.append([label, str(efs[name]), f"{recall:.3f}", f"{p50:.2f}", f"{p95:.2f}", f"{qps:.0f}"])
    notes = (
        f"The rule (documents/search/tuning.py, HNSW_EF_SEARCH unset, base {settings.HNSW_EF_SEARCH_BASE}): "
        f"ef_search {auto} at {n:,} rows, k=10 and m={graph.m}; with the graphs `vector_index` builds "
        f"({_graphs()}) it would choose {_rule(1_000_000, K)} at 1M and {_rule(10_000_000, K)} at 10M rows (k=10), "
        f"{_rule(1_000_000, 50)} at 1M for k=50 (sizes other than {n:,} are not run here). "
        f"Index {index_mb:,.0f} MB, shared_buffers {shared_buffers}, read in with pg_prewarm before timing. "
        f"HNSW build {'(reused from an earlier run)' if reused else f'{build_seconds:.1f} s'} in PostgreSQL, "
        f"{faiss_build_seconds:.1f} s in FAISS "
        f"({os.cpu_count()} threads); FAISS efSearch = the smallest of {list(FAISS_LADDER)} reaching the "
        f"rule's recall; whole run {(time.perf_counter() - started) / 60:.1f} min."
    )
    _common.report(
        args.quick,
        f"ef_search: the scale-aware rule vs fixed, and FAISS ({n:,} clustered 384-d)",
        f"{len(queries)} queries, k=10, cosine, m={graph.m}, ef_construction={graph.ef_construction}, "
        "bare SQL per query (prepared, binary, autocommit), interleaved.",
        table,
        notes,
    )
    print(
        " ".join(
            [
                f"rows={n}",
                f"auto_ef={auto}",
                *(
                    f"{_key(name, efs[name])}_recall={r[0]:.3f} {_key(name, efs[name])}_p95_ms={r[2]:.2f}"
                    for name, r in results.items()
                ),
            ]
        )
    )
    if not args.reuse:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _key(name: str, ef: int) -> str:
    """A setting's name in the closing key=value line: auto, faiss, or ef<value>."""
    return {"auto (rule)": "auto", "FAISS HNSW at the rule's recall": "faiss"}.get(name, f"ef{ef}")


def _loaded(conn, n: int) -> bool:
    """Whether the table holds ``n`` rows and an HNSW index (from an earlier ``--reuse`` run)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [TABLE]).fetchone()[0]
    if not exists:
        return False
    rows = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    indexed = conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE '%%USING hnsw%%'", [TABLE]
    ).fetchone()[0]
    return rows == n and indexed == 1


def _rule(rows: int, k: int) -> int:
    from documents.search import tuning

    return tuning.ef_search(rows, k, tuning.build_parameters(rows).m)


def _graphs() -> str:
    from documents.search import tuning

    return ", ".join(
        f"m={g.m} at {rows:,}" for rows, g in ((r, tuning.build_parameters(r)) for r in (1_000_000, 10_000_000))
    )


if __name__ == "__main__":
    main()
