"""Filtered vector search: a collection holding 1% of ~100k chunks, plain HNSW against iterative index scans.

    python bench/filtered_search.py [--quick] [--chunks N] [--queries N]

HNSW finds ``ef_search`` candidates and *then* applies the WHERE clause: when a collection holds 1%
of the chunks, about 1% of the candidates survive and most of the k results go missing. pgvector
0.8's iterative index scans keep walking the graph until k rows pass. This measures both, in one
run, in the database ``ragbench_filtered``:

- data: the clustered synthetic vectors of bench/_data.py (100,000 by default; embedding that many
  texts with MiniLM takes far longer than 15 minutes on 2 cores), documents of 20 chunks, each
  chunk carrying a SciFact sentence (cycled) as its text, so that keyword and hybrid search run
  on real English. alice owns "corpus" (89% of the chunks) and "rare" (1%: documents drawn at
  random), bob owns "private" (10%). Queries: synthetic vectors, each paired with a SciFact claim
  as its text. The vectors are in the collections' embedding space (its partition of the chunk vectors).
- as alice, filtered to "rare", k=10, the app's ef_search, interleaved per query: pgvector's
  documented query on the space's rows (``WHERE space_id = S ... ORDER BY (embedding::vector(384)) <=> q
  LIMIT 10``, the expression the space's index has) with the service's predicate and the HNSW
  index forced, with ``hnsw.iterative_scan`` off (plain), relaxed_order (what the service sets) and
  strict_order, and relaxed_order at 2× and 4× ef_search; the service's query shape (the candidates
  materialised and re-sorted) with HNSW forced and as the planner chooses, and the same fetching 20
  to keep 10; ``documents.search.search(
  mode="vector")`` itself; exact search (index scans off). Recall@10 and rows returned against
  exact filtered search (numpy, checked against the SQL); p50/p95 latency.
- keyword and hybrid mode through the service on the same data, filtered to "rare" and over all
  that alice may read.
- carol, a member of "rare" and of nothing else, searching everything she may read with no collection
  filter (vector, keyword, hybrid): the same 1% of the table, but the permission subquery alone says so.
- EXPLAIN (ANALYZE) of the filtered query: which index the planner uses at this size, and how many
  tuples the iterative scan examined.
- the HNSW build of the 100k chunks twice: with the server's maintenance_work_mem and parallel
  workers, then with maintenance_work_mem sized for the graph.

Appends the table to bench/BENCHMARKS.md and ends with one line of headline figures.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _data  # noqa: E402

K = 10


def main() -> None:
    args, corpus, loaded, started = _data.one_percent_bench(__doc__.splitlines()[0], "ragbench_filtered")
    from django.contrib.auth import get_user_model

    from documents import search as retrieval
    from documents.search import indexes, tuning
    from documents.spaces.storage import vector_expression

    n, dim = corpus.vectors.shape
    memory = indexes.sized_memory(n, dim)  # what `manage.py vector_index` gives a build
    workers = max(1, (os.cpu_count() or 2) - 1)
    _data.progress("building HNSW with the server's settings ...")
    default_memory, default_workers = _server_setting("maintenance_work_mem"), _server_setting(
        "max_parallel_maintenance_workers")
    default_seconds, default_notices = _data.build_hnsw(loaded.space)
    _data.progress(f"building HNSW again with maintenance_work_mem={memory}, {workers} parallel worker(s) ...")
    build_seconds, build_notices = _data.build_hnsw(loaded.space, maintenance_work_mem=memory, workers=workers)

    rare, alice = loaded.collections["rare"], loaded.user
    # A reader of the 1% collection alone: with no collection filter, only the permission check narrows her search.
    carol, _ = get_user_model().objects.get_or_create(username="carol")
    rare.members.add(carol)
    rare_mask = loaded.collection_of == rare.pk
    readable_mask = np.isin(loaded.collection_of, [loaded.collections["corpus"].pk, rare.pk])
    truth_rare = loaded.chunk_ids[_data.exact_top(corpus.vectors, corpus.queries, K, rare_mask)]
    truth_readable = loaded.chunk_ids[_data.exact_top(corpus.vectors, corpus.queries, K, readable_mask)]
    ef = tuning.ef_search(len(corpus.vectors), K)  # what the app chooses at this size
    space = loaded.space
    where, where_params = retrieval.chunk_predicate(alice, retrieval.Filters(collections=(rare.pk,)), alias="v")
    # pgvector's documented query, with the service's predicate, on the space's partition and the expression its
    # index has: the k first rows the scan returns.
    sql = _data.bare_sql(space, where=where, limit=str(K))
    expression = f"{vector_expression(space, 'v.embedding')} <=> %b::vector({int(space.dimensions)})"

    # The service's shape: k candidates materialised and re-sorted by distance (relaxed_order returns them
    # roughly in order); and the same over-fetching 2k candidates, keeping the k nearest.
    def resorted_sql(fetch: int) -> str:
        return (f"WITH nearest AS MATERIALIZED (SELECT v.chunk_id, {expression} AS gap FROM documents_chunkvector v "
                f"WHERE v.space_id = {int(space.pk)} AND v.distance = 'cosine' AND {where} ORDER BY gap "
                f"LIMIT {fetch}) SELECT chunk_id FROM nearest ORDER BY gap + 0 LIMIT {K}")

    resorted, overfetched = resorted_sql(K), resorted_sql(2 * K)
    # The planner picks its own path (at 1% it may prefer the B-tree on collection_id and an exact sort);
    # "HNSW" rows forbid the sort, as tests/documents/search/test_retrieval.py does, to measure the HNSW scan itself.
    connections = {}
    for name, scan, forced, ef_search in (
        ("plain", "off", True, ef), ("relaxed", "relaxed_order", True, ef), ("strict", "strict_order", True, ef),
        ("relaxed-2x", "relaxed_order", True, 2 * ef), ("relaxed-4x", "relaxed_order", True, 4 * ef),
        ("planner", "relaxed_order", False, ef),
    ):
        # No prepared statements: a generic plan cannot see which collection is asked for, and the
        # service's vector statements are planned for each search of a collection this small
        # (documents.search.sql.CUSTOM_PLANS; only a wide one runs on a cached plan, CACHED_PLAN_SHARE).
        connections[name] = _common.vector_connection(prepare_threshold=None)
        connections[name].execute(f"SET hnsw.ef_search = {int(ef_search)}")
        connections[name].execute(f"SET hnsw.iterative_scan = {scan}")
        if forced:
            connections[name].execute("SET enable_sort = off")
    exact = _common.vector_connection(prepare_threshold=None)
    exact.execute("SET enable_indexscan = off")  # no HNSW: the filtered rows, sorted exactly
    queries, texts = corpus.queries, corpus.query_texts
    params = [[*where_params, q] for q in queries]
    check = sum(
        set(r[0] for r in exact.execute(sql, params[i]).fetchall()) == set(truth_rare[i].tolist()) for i in range(3)
    )
    plans = {name: _explain(connections[name], sql, params[0]) for name in ("plain", "relaxed")}
    plans["planner"] = _explain(connections["planner"], resorted, [queries[0], *where_params])
    plans["resorted"] = _explain(connections["relaxed"], resorted, [queries[0], *where_params])
    plans["exact"] = _explain(exact, sql, params[0])
    planner_uses_hnsw = _data.hnsw_index(space) in plans["planner"]
    max_scan_tuples = connections["relaxed"].execute("SHOW hnsw.max_scan_tuples").fetchone()[0]

    def service(mode: str, filtered: bool, user=alice):
        filters = retrieval.Filters(collections=(rare.pk,)) if filtered else None

        def run(i):
            hits = retrieval.search(user=user, query=texts[i], query_vector=queries[i], k=K, mode=mode,
                                    filters=filters)
            return [hit.chunk_id for hit in hits]

        return run

    def raw(conn):
        return lambda i: [r[0] for r in conn.execute(sql, params[i]).fetchall()]

    def raw_resorted(conn, statement):
        return lambda i: [r[0] for r in conn.execute(statement, [queries[i], *where_params]).fetchall()]

    methods = {
        "HNSW, iterative scan off (plain)": raw(connections["plain"]),
        "HNSW, iterative scan relaxed_order": raw(connections["relaxed"]),
        "HNSW, iterative scan strict_order": raw(connections["strict"]),
        f"HNSW, iterative scan relaxed_order, ef_search={2 * ef}": raw(connections["relaxed-2x"]),
        f"HNSW, iterative scan relaxed_order, ef_search={4 * ef}": raw(connections["relaxed-4x"]),
        "HNSW, relaxed_order, re-sorted (the service's query)": raw_resorted(connections["relaxed"], resorted),
        f"HNSW, relaxed_order, {2 * K} re-sorted to {K} (over-fetch)": raw_resorted(
            connections["relaxed"], overfetched),
        "SQL, planner's choice (the service's query)": raw_resorted(connections["planner"], resorted),
        "service, vector": service("vector", True),
        "exact (index scans off)": raw(exact),
        "service, keyword": service("keyword", True),
        "service, hybrid": service("hybrid", True),
        "service, vector, unfiltered": service("vector", False),
        "service, keyword, unfiltered": service("keyword", False),
        "service, hybrid, unfiltered": service("hybrid", False),
        "service, vector, 1% reader, unfiltered": service("vector", False, carol),
        "service, keyword, 1% reader, unfiltered": service("keyword", False, carol),
        "service, hybrid, 1% reader, unfiltered": service("hybrid", False, carol),
    }
    _data.progress(f"timing {len(queries)} queries × {len(methods)} methods (ef_search={ef}) ...")
    timings = _data.interleaved(methods, len(queries))
    for conn in (*connections.values(), exact):
        conn.close()
    truth = {name: truth_readable if name == "service, vector, unfiltered" else truth_rare for name in methods}
    rows = [["method", "collection", "recall@10", "returned (k=10)", "p50 ms", "p95 ms", "p50 × exact"]]
    figures = {}
    exact_p50 = _data.percentiles(timings["exact (index scans off)"][0])[0]
    for name, (seconds, ids) in timings.items():
        p50, p95, _ = _data.percentiles(seconds)
        vector = "keyword" not in name and "hybrid" not in name
        recall = _data.recall(ids, truth[name]) if vector else float("nan")
        returned = float(np.mean([len(i) for i in ids]))
        figures[name] = {"recall": recall, "returned": returned, "p50": p50, "p95": p95}
        scope = "rare (1%)"
        if "unfiltered" in name:
            scope = "everything carol reads: rare (1%)" if "1% reader" in name else "everything alice reads (90%)"
        rows.append([name, scope,
                     f"{recall:.3f}" if vector else "—", f"{returned:.2f}", f"{p50:.2f}", f"{p95:.2f}",
                     f"{p50 / exact_p50:.2f}"])
    seconds = time.perf_counter() - started
    notes = [
        f"Plans (EXPLAIN ANALYZE, first query). Planner's choice: {plans['planner']}. HNSW, plain: {plans['plain']}. "
        f"HNSW, relaxed_order: {plans['relaxed']}. HNSW, the service's query: {plans['resorted']}. "
        f"Exact: {plans['exact']}.",
        f"Exact filtered search check: {check}/3 queries, numpy top-10 = SQL top-10 with index scans off.",
        f"HNSW build of the {n:,} chunks (the model's index, m=16, ef_construction=64), same run: with the server's "
        f"settings (maintenance_work_mem={default_memory}, max_parallel_maintenance_workers={default_workers}) "
        f"{default_seconds:.0f} s{_said(default_notices)}; sized (maintenance_work_mem={memory}, {workers} worker(s), "
        f"the leader builds too) {build_seconds:.0f} s{_said(build_notices)}.",
        f"\"rare\" holds {rare_mask.sum():,} chunks ({rare_mask.mean():.1%}); hnsw.max_scan_tuples={max_scan_tuples}. "
        "Keyword and hybrid queries are SciFact claims over SciFact sentences; hybrid fuses 50 candidates per arm.",
    ]
    title = ("Filtered vector search: a 1% collection, plain HNSW against iterative scans "
             f"(bench/filtered_search.py{', ' + args.label if args.label else ''})")
    settings_line = (f"{len(queries)} queries, k={K}, hnsw.ef_search={ef} (the app's) unless the method says, "
                     f"one client, methods interleaved per query; DEBUG=false; whole run {seconds / 60:.1f} min.")
    if args.quick:
        print(f"\n{title} (--quick: not recorded)\n{settings_line}")
        for row in rows:
            print(" | ".join(row))
        print("\n".join(notes))
    else:
        _common.record(title, settings_line, rows, notes="\n".join(f"- {note}" for note in notes))
    bare = figures["HNSW, iterative scan relaxed_order"]
    iterative = figures["HNSW, relaxed_order, re-sorted (the service's query)"]
    overfetch = figures[f"HNSW, relaxed_order, {2 * K} re-sorted to {K} (over-fetch)"]
    plain = figures["HNSW, iterative scan off (plain)"]
    service_vector = figures["service, vector"]
    headline = {
        "iterative_recall_at_10": iterative["recall"], "iterative_returned": iterative["returned"],
        "plain_returned": plain["returned"], "plain_recall_at_10": plain["recall"],
        "bare_iterative_recall_at_10": bare["recall"], "overfetch_recall_at_10": overfetch["recall"],
        "iterative_p50_ms": iterative["p50"], "plain_p50_ms": plain["p50"], "exact_p50_ms": exact_p50,
        "service_recall_at_10": service_vector["recall"], "service_returned": service_vector["returned"],
        "reader_1pct_recall_at_10": figures["service, vector, 1% reader, unfiltered"]["recall"],
        "reader_1pct_p50_ms": figures["service, vector, 1% reader, unfiltered"]["p50"],
        "service_p50_ms": service_vector["p50"], "planner_uses_hnsw": str(planner_uses_hnsw).lower(),
        "keyword_p50_ms": figures["service, keyword"]["p50"], "hybrid_p50_ms": figures["service, hybrid"]["p50"],
        "hybrid_unfiltered_p50_ms": figures["service, hybrid, unfiltered"]["p50"], "chunks": n, "ef_search": ef,
        "build_default_s": default_seconds, "build_sized_s": build_seconds,
    }
    print(" ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                   for key, value in headline.items()))


def _server_setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


def _said(notices: list[str]) -> str:
    return f" (the server said: \"{notices[0]}\")" if notices else ""


def _explain(conn, sql: str, params: list) -> str:
    """The plan's shape, and for the HNSW scan how many tuples it examined to return its rows."""
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0]
    shape = _data.plan_shape(plan)
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if "_hnsw_" in node.get("Index Name", ""):
            examined = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            shape += f" (HNSW examined {examined:.0f} tuples, {node.get('Actual Rows', 0):.0f} passed the filter)"
        nodes += node.get("Plans", [])
    return shape


if __name__ == "__main__":
    main()
