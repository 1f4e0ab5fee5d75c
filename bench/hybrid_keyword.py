"""The keyword (BM25) arm at 100k chunks: the statement before issue 17 goal 2 against today's, side by side.

    python bench/hybrid_keyword.py [--quick] [--chunks N] [--queries N]

The data of bench/filtered_search.py (its clustered synthetic vectors, SciFact sentences as the chunks'
texts, SciFact claims as the queries; alice reads "corpus" (89%) and "rare" (1%), bob owns "private"
(10%)), in the database ``ragbench_hybrid``, the HNSW index built as ``manage.py vector_index`` sizes it.
``documents.search.search`` itself runs with each keyword statement (bench/_keyword_before.py holds the
old ones: before goal 2, and today's as it was until 2026-12-02, when a very common word could join the rare
ones), interleaved per query:

- keyword and hybrid mode, over all alice reads (unfiltered: the goal's "hybrid over 100k chunks"),
  filtered to "rare", and unfiltered with each claim followed by the collection's commonest word; p50/p95 latency;
- each statement's top 10 and top 50 (the keyword arm's size in hybrid mode, RETRIEVAL_CANDIDATES) against
  BM25 scoring every chunk that holds a query word (today's statement with every word a candidate);
- the chunks each statement reads (heap tuples of its bitmap scan, EXPLAIN ANALYZE), median and p90.

Appends the table to bench/BENCHMARKS.md (not with --quick) and ends with one line of headline figures.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _data  # noqa: E402

K = 10


def main() -> None:
    args, corpus, loaded, started = _data.one_percent_bench(__doc__.splitlines()[0], "ragbench_hybrid")
    import _keyword_before
    from django.conf import settings

    from documents import search as retrieval
    from documents.search import indexes, sql

    _data.build_hnsw(loaded.space, maintenance_work_mem=indexes.sized_memory(*corpus.vectors.shape), workers=1)
    alice, rare = loaded.user, loaded.collections["rare"]
    texts, vectors = corpus.query_texts, corpus.queries
    statements = {"before": _keyword_before.keyword_statement_before,
                  "until": _keyword_before.keyword_statement_unbounded_or, "today": sql.keyword_statement}
    labels = {"before": "before: ", "until": "until 2026-12-02: ", "today": ""}
    # The same claims with the collection's commonest word added (a word of a domain, or a name, in a large share of
    # the chunks): the case the bound on ORed words (sql.RARE_ROWS) is for.
    common, common_share = _commonest_word(loaded.collections["corpus"].pk)
    queries = {"unfiltered": corpus.query_texts, "rare": corpus.query_texts,
               "common": [f"{text} {common}" for text in corpus.query_texts]}
    scopes = {"unfiltered": "everything alice reads (90%)", "rare": "rare (1%)",
              "common": f"everything alice reads, each claim + “{common}” (in {common_share:.0%} of its chunks)"}
    today = sql.keyword_statement

    @contextmanager
    def keyword(name: str):
        sql.keyword_statement = statements[name]
        try:
            yield
        finally:
            sql.keyword_statement = today

    def service(name: str, mode: str, scope: str, k: int = K):
        filters = retrieval.Filters(collections=(rare.pk,)) if scope == "rare" else None
        asked = queries[scope]

        def run(i):
            with keyword(name):
                hits = retrieval.search(user=alice, query=asked[i], query_vector=vectors[i], k=k, mode=mode,
                                        filters=filters)
            return [hit.chunk_id for hit in hits]

        return run

    # Every word a candidate and no cap: BM25 over every chunk holding a query word, the reference.
    exhaustive = {"RARE_ROWS": 10**12, "CANDIDATES_PER_RESULT": 10**9}
    arm = settings.RETRIEVAL_CANDIDATES
    _data.progress(f"BM25 over every matching chunk for {len(texts)} queries (the reference) ...")
    reference = {}
    for scope in scopes:
        saved = {name: getattr(sql, name) for name in exhaustive}
        for name, value in exhaustive.items():
            setattr(sql, name, value)
        try:
            run = service("today", "keyword", scope, k=arm)
            reference[scope] = [run(i) for i in range(len(texts))]
        finally:
            for name, value in saved.items():
                setattr(sql, name, value)

    methods = {}
    for scope in scopes:
        for name in statements:
            methods[(name, "keyword", scope)] = service(name, "keyword", scope)
            methods[(name, "hybrid", scope)] = service(name, "hybrid", scope)
            methods[(name, "keyword arm", scope)] = service(name, "keyword", scope, k=arm)
    _data.progress(f"timing {len(texts)} queries × {len(methods)} methods ...")
    timings = _data.interleaved({" / ".join(key): run for key, run in methods.items()}, len(texts))
    read = {(name, scope): _chunks_read(statements[name], alice, rare.pk if scope == "rare" else None,
                                        queries[scope][:30], arm)
            for name in statements for scope in scopes}

    rows = [["method", "collection", "recall@10 vs all-chunk BM25", f"recall@{arm} vs all-chunk BM25",
             "chunks read (median / p90)", "p50 ms", "p95 ms"]]
    figures = {}
    for (name, mode, scope), _ in methods.items():
        if mode == "keyword arm":
            continue
        arm_ids = timings[f"{name} / keyword arm / {scope}"][1]
        truth = reference[scope]
        p50, p95, _ = _data.percentiles(timings[f"{name} / {mode} / {scope}"][0])
        figures[(name, mode, scope)] = p50, p95
        label = f"{labels[name]}service, {mode}, {'unfiltered' if scope == 'common' else scope}"
        if mode == "keyword":
            r10, r50 = _overlap(arm_ids, truth, K), _overlap(arm_ids, truth, arm)
            chunks = read[(name, scope)]
            quality = [f"{r10:.3f}", f"{r50:.3f}", f"{np.median(chunks):,.0f} / {np.percentile(chunks, 90):,.0f}"]
        else:
            quality = ["—", "—", "as keyword"]
        rows.append([label, scopes[scope], *quality,
                     f"{p50:.2f}", f"{p95:.2f}"])
    minutes = (time.perf_counter() - started) / 60
    title = (f"Keyword arm before and after issue 17 goal 2: hybrid over {args.chunks:,} chunks "
             "(bench/hybrid_keyword.py)" + (f", {args.label}" if args.label else ""))
    settings_line = (
        f"{len(texts)} SciFact claims over {args.chunks:,} chunks (SciFact sentences), k={K}, hybrid fuses "
        f"{arm} candidates per arm; `search()` itself with each keyword statement, interleaved per query; one "
        f"client; DEBUG=false; whole run {minutes:.1f} min; load average at the end {os.getloadavg()[0]:.1f} "
        f"(2 cores). Recall: each statement's top {K} and top {arm} "
        "(the keyword arm as hybrid asks it) against BM25 scoring every chunk that holds a query word; chunks "
        "read: heap tuples of the candidates' bitmap scan (EXPLAIN ANALYZE, 30 queries)."
    )
    _common.report(args.quick, title, settings_line, rows)
    headline = {
        "hybrid_unfiltered_p50_ms_before": figures[("before", "hybrid", "unfiltered")][0],
        "hybrid_unfiltered_p50_ms": figures[("today", "hybrid", "unfiltered")][0],
        "keyword_unfiltered_p50_ms_before": figures[("before", "keyword", "unfiltered")][0],
        "keyword_unfiltered_p50_ms": figures[("today", "keyword", "unfiltered")][0],
        "keyword_common_word_p50_ms_until": figures[("until", "keyword", "common")][0],
        "keyword_common_word_p50_ms": figures[("today", "keyword", "common")][0],
    }
    print(" ".join(f"{key}={value:.3f}" for key, value in headline.items()))


def _overlap(found: list[list[int]], truth: list[list[int]], k: int) -> float:
    """The share of BM25's top ``k`` found in the top ``k`` (1 when no chunk holds a query word)."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / min(k, len(t)) if t else 1.0
                          for f, t in zip(found, truth, strict=True)]))


def _commonest_word(collection: int) -> tuple[str, float]:
    """The word (a lexeme the English configuration keeps as it is) in most of ``collection``'s chunks, and that
    share of its chunks."""
    from django.db import connection

    from documents.search.sql import COLLECTION, TERMSTAT

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.lexeme, t.df::float8 / greatest(c.chunk_total, 1) FROM {TERMSTAT} t "
            f"JOIN {COLLECTION} c ON c.id = t.collection_id WHERE t.collection_id = %s "
            "AND tsvector_to_array(to_tsvector('english', t.lexeme)) = ARRAY[t.lexeme] ORDER BY t.df DESC LIMIT 1",
            [collection],
        )
        lexeme, share = cursor.fetchone()
    return lexeme, share


def _chunks_read(statement, user, collection: int | None, texts: list[str], limit: int) -> list[int]:
    """Heap tuples the candidates' bitmap scan read (kept or filtered out), per query."""
    from django.db import connection, transaction

    from documents.search import Filters, sql
    from documents.search import query as search_query

    filters = Filters(collections=(collection,)) if collection else Filters()
    counts = []
    today, sql.keyword_statement = sql.keyword_statement, statement
    try:
        for text in texts:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(*search_query._scope_sql(user, filters, None))
                query, values = search_query._keyword_sql(text, filters, limit)
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, values)
                nodes, total = [cursor.fetchone()[0][0]["Plan"]], 0
                while nodes:
                    node = nodes.pop()
                    if node["Node Type"] == "Bitmap Heap Scan" and node.get("Relation Name") == "documents_chunk":
                        total += node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                    nodes += node.get("Plans", [])
                counts.append(total)
    finally:
        sql.keyword_statement = today
    return counts


if __name__ == "__main__":
    main()
