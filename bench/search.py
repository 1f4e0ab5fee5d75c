"""Vector search at 100k+ chunks, side by side: bare SQL, our service, the HTTP API, FAISS, langchain-postgres.

    python bench/search.py [--quick] [--synthetic N] [--sentences N] [--queries N] [--ef 40,100,200]
    python bench/search.py --synthetic 1000000 --sentences 1000 --no-peer   # the longer optional run

Two data sets, one after the other, in the database ``ragbench_search``:

(i)  SciFact abstracts split into sentences, embedded with the offline all-MiniLM-L6-v2 (the app's
     local backend; cached under var/bench-cache/, so only the first run embeds). Default: the
     first 10,000 sentences (of about 45k, from the first ~1,100 abstracts): on a 2-core machine the
     int8 model embeds some tens of sentences a second, and all 45k would not fit this benchmark's 15
     minutes; ``--sentences 0`` takes them all. Queries: SciFact dev claims, embedded alike.
(ii) clustered synthetic vectors, 100,000 by default (bench/_data.py says how they are drawn).

Each is loaded as Chunk rows through the app's COPY path, their vectors into the collections' embedding space
(its partition of the chunk vectors): alice owns "corpus" (80% of the chunks),
bob shares "shared" (10%) with her and keeps "private" (10%). Measured on it, in one run:

- HNSW build time of the space's own index (m=16, ef_construction=64, on ``(embedding::vector(N))``, partial
  on distance), with
  maintenance_work_mem sized for the graph and parallel workers (bench/filtered_search.py compares
  this with the server's defaults);
- per ``hnsw.ef_search``, on the same queries, interleaved (each method goes first in turn):
  (a) SQL: ``SELECT chunk_id FROM documents_chunkvector WHERE space_id = S AND distance = 'cosine'
      ORDER BY (embedding::vector(N)) <=> q LIMIT 10`` (the bare query on the space's partition and partial
      expression index: psycopg, prepared, binary vector, autocommit);
  (a+f) the same with the service's permission + collection predicate (iterative scan on);
  (b) ``documents.search.search(mode="vector", filters=collection, query_vector=q)`` as alice;
  (c) GET /api/v1/search?mode=vector&collection=… with a bearer token, served by uvicorn (ASGI,
      pooled connections, as ``make run`` serves it), production settings (DEBUG=false). The
      server looks the query vector up instead of embedding the text (bench/_search_server.py):
      the real model's query embedding time is reported on its own line;
  (c0) GET /api/v1/documents/{id} on the same server: the simplest authenticated read, the floor
      under (c) (uvicorn, Django, the bearer-token lookup and one query);
  (d) FAISS ``IndexHNSWFlat`` in process, same M / efConstruction / efSearch (the algorithmic limit);
  (e) langchain-postgres ``PGVector.similarity_search_by_vector`` in its own venv (a subprocess,
      bench/_langchain_peer.py), on its own table with the same HNSW index;
  halfvec: an expression index ``(embedding::halfvec(384)) halfvec_cosine_ops`` on a copy of the table.
- then IVFFlat, the option: ``manage.py vector_index --type ivfflat``'s service builds it in place of the
  HNSW index (lists = rows/1000, pgvector's rule) and the bare SQL and (b) are timed again, interleaved,
  at probes = √lists/2, √lists (the app's default) and 2√lists; the HNSW index is rebuilt afterwards.
- recall@10 against exact search: numpy brute force over the same float32 vectors (restricted to the
  collection for (a+f), (b), (c)), checked against the SQL with index scans off.

Appends the tables to bench/BENCHMARKS.md and ends with one line of headline figures (the synthetic set
at the app's default ef_search). ``--synthetic 1000000`` is the long optional run (about 1.5 GB of
vectors; the HNSW build alone takes a long time on 2 cores — see BENCHMARKS.md for the measured
100k build to extrapolate from); it needs several GB of RAM for maintenance_work_mem.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _data  # noqa: E402

K = 10
LAYOUT = [("corpus", "alice", False, 0.8), ("shared", "bob", True, 0.1), ("private", "bob", False, 0.1)]
HALFVEC_TABLE, HALFVEC_INDEX = "bench_chunk_halfvec", "bench_chunk_halfvec_hnsw"
FLOOR = "(c0) HTTP floor: GET /api/v1/documents/{id}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 vectors, 1,000 sentences, ef 100: no record (CI)")
    parser.add_argument("--synthetic", type=int, default=100_000, help="synthetic vectors (1000000: long run)")
    parser.add_argument("--sentences", type=int, default=10_000, help="SciFact sentences (0: all, about 45k)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef", default="40,100,200", help="hnsw.ef_search values")
    parser.add_argument("--no-peer", action="store_true", help="skip langchain-postgres")
    parser.add_argument("--label", default="", help="added to the recorded title, e.g. 'before the change'")
    args = parser.parse_args()
    if args.quick:
        args.synthetic, args.sentences, args.queries = min(args.synthetic, 2_000), 1_000, 20  # IVFFlat needs 1,000
        args.ef = "100"
    efs = [int(ef) for ef in args.ef.split(",")]
    _common.require_shared("data/scifact/corpus.jsonl")
    _common.setup_django(
        "ragbench_search", EMBEDDING_BACKEND="local", LOG_LEVEL="WARNING",
        DEBUG="false", SECRET_KEY=secrets.token_urlsafe(32), ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    from django.conf import settings

    started, load = time.perf_counter(), os.getloadavg()
    embed_ms = query_embedding_ms()
    data_sets = [
        ("scifact", _data.scifact(sentences=args.sentences, queries=args.queries)),
        ("synthetic", _data.clustered(n=args.synthetic, queries=args.queries)),
    ]
    results = {}
    for key, corpus in data_sets:
        results[key] = run(corpus, efs, peer=not args.no_peer)
    default_ef = settings.HNSW_EF_SEARCH if settings.HNSW_EF_SEARCH in efs else efs[len(efs) // 2]
    record(results, data_sets, efs, embed_ms, time.perf_counter() - started, args, load)
    synthetic = results["synthetic"]["ef"][default_ef]
    scifact = results["scifact"]["ef"][default_ef]
    sql = synthetic["(a) SQL"]["p50"]
    headline = {
        "recall_at_10": synthetic["(b) service"]["recall"],
        "service_vs_sql": synthetic["(b) service"]["p50"] / sql,
        "http_vs_sql": synthetic["(c) HTTP API"]["p50"] / sql,
        "http_floor_vs_sql": synthetic[FLOOR]["p50"] / sql,
        "sql_p50_ms": sql,
        "ef_search": default_ef,
        "chunks": len(data_sets[1][1].texts),
        "sql_recall_at_10": synthetic["(a) SQL"]["recall"],
        "faiss_p50_ms": synthetic["(d) FAISS HNSW"]["p50"],
        "scifact_recall_at_10": scifact["(b) service"]["recall"],
        "scifact_service_vs_sql": scifact["(b) service"]["p50"] / scifact["(a) SQL"]["p50"],
        "build_s": results["synthetic"]["builds"]["sized"][0],
        "query_embed_p50_ms": embed_ms,
    }
    ivf = results["synthetic"]["ivfflat"]
    headline["ivfflat_recall_at_10"] = ivf["results"][ivf["probes"]]["SQL"]["recall"]
    headline["ivfflat_sql_p50_ms"] = ivf["results"][ivf["probes"]]["SQL"]["p50"]
    headline["ivfflat_build_s"] = ivf["build"]
    if "(e) langchain-postgres" in synthetic:
        headline["langchain_vs_sql"] = synthetic["(e) langchain-postgres"]["p50"] / sql
    print(" ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                   for key, value in headline.items()))


def query_embedding_ms() -> float:
    """p50 of embedding one SciFact claim with the configured MiniLM model (what (c) leaves out)."""
    from documents import embeddings

    backend = embeddings.get_backend()
    claims = _data.scifact_claims()[:40]
    backend.embed_query(claims[0])
    seconds = []
    for claim in claims:
        started = time.perf_counter()
        backend.embed_query(claim)
        seconds.append(time.perf_counter() - started)
    return float(np.percentile(seconds, 50) * 1000)


def run(corpus: _data.Corpus, efs: list[int], *, peer: bool) -> dict:
    """Everything measured on one data set."""
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    from core.models import ApiToken
    from documents import search as retrieval
    from documents.models import Document
    from documents.search import indexes

    _data.progress(f"== {corpus.name}: loading {len(corpus.texts):,} chunks")
    loaded = _data.load(corpus, layout=LAYOUT)
    n, dim = corpus.vectors.shape
    corpus_collection = loaded.collections["corpus"]
    mask = loaded.collection_of == corpus_collection.pk
    memory = indexes.sized_memory(n, dim)  # what `manage.py vector_index` gives a build
    workers = max(1, (os.cpu_count() or 2) - 1)
    builds = {}
    _data.progress(f"building HNSW with maintenance_work_mem={memory}, {workers} parallel worker(s) ...")
    builds["sized"] = (*_data.build_hnsw(loaded.space, maintenance_work_mem=memory, workers=workers), memory,
                       str(workers))
    index_mb = _data.relation_mb(_data.hnsw_index(loaded.space))
    bare_sql = _data.bare_sql(loaded.space)  # the space's rows, as its index has them

    truth_all = loaded.chunk_ids[_data.exact_top(corpus.vectors, corpus.queries, K)]
    truth_collection = loaded.chunk_ids[_data.exact_top(corpus.vectors, corpus.queries, K, mask)]
    sql = _common.vector_connection()
    filtered = _common.vector_connection()
    filtered.execute("SET hnsw.iterative_scan = relaxed_order")
    exact_check = _check_exact(sql, bare_sql, corpus.queries[:3], truth_all[:3])

    where, where_params = retrieval.chunk_predicate(
        loaded.user, retrieval.Filters(collections=(corpus_collection.pk,)), alias="v")
    filtered_sql = _data.bare_sql(loaded.space, where=where, limit=str(K))
    plans = {"(a) SQL": _plan(sql, bare_sql, [corpus.queries[0]]),
             "(a+f) SQL + filters": _plan(filtered, filtered_sql, [*where_params, corpus.queries[0]])}

    _data.progress("building FAISS IndexHNSWFlat ...")
    faiss_index, faiss_seconds = _faiss(corpus.vectors)
    _data.progress("building the halfvec expression index on a copy of the table ...")
    halfvec_seconds, halfvec_mb = _halfvec(memory, workers, dim, loaded.space)
    halfvec_sql = (f"SELECT id FROM {HALFVEC_TABLE} ORDER BY embedding::halfvec({dim}) <=> %b::halfvec({dim}) "
                   f"LIMIT {K}")

    token = ApiToken.issue(user=loaded.user, name="bench")[1]
    floor_document = Document.objects.filter(collection=corpus_collection).values_list("pk", flat=True).first()
    vectors_file = Path(tempfile.mkdtemp(prefix="bench-search-")) / "queries.npz"
    np.savez(vectors_file, texts=np.asarray(corpus.query_texts), vectors=corpus.queries)
    queries, texts = corpus.queries, corpus.query_texts
    params = [[*where_params, q] for q in queries]
    import faiss

    faiss.omp_set_num_threads(1)  # one query at a time, like the others
    per_ef = {}
    for ef in efs:
        _data.progress(f"ef_search={ef}: timing {len(queries)} queries per method ...")
        for conn in (sql, filtered):
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        faiss_index.hnsw.efSearch = ef
        server, port = _start_server(ef, vectors_file, token)
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {token}"}

        def http_search(i, client=client, headers=headers):
            query = urlencode({"q": texts[i], "k": K, "mode": "vector", "collection": corpus_collection.pk})
            client.request("GET", f"/api/v1/search?{query}", headers=headers)
            response = client.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"/api/v1/search answered {response.status}: {body[:200]!r}")
            return [r["chunk_id"] for r in json.loads(body)["results"]]

        def http_floor(i, client=client, headers=headers):
            client.request("GET", f"/api/v1/documents/{floor_document}", headers=headers)
            response = client.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/api/v1/documents answered {response.status}")
            return []

        def service(i):
            hits = retrieval.search(user=loaded.user, query=texts[i], k=K, mode="vector", query_vector=queries[i],
                                    filters=retrieval.Filters(collections=(corpus_collection.pk,)))
            return [hit.chunk_id for hit in hits]

        methods = {
            "(a) SQL": lambda i: [r[0] for r in sql.execute(bare_sql, [queries[i]]).fetchall()],
            "(a+f) SQL + filters": lambda i: [r[0] for r in filtered.execute(filtered_sql, params[i]).fetchall()],
            "(b) service": service,
            "(c) HTTP API": http_search,
            FLOOR: http_floor,
            "(d) FAISS HNSW": lambda i: loaded.chunk_ids[faiss_index.search(queries[i: i + 1], K)[1][0]].tolist(),
            "halfvec index (SQL)": lambda i: [r[0] for r in sql.execute(halfvec_sql, [queries[i]]).fetchall()],
        }
        try:
            with override_settings(HNSW_EF_SEARCH=ef):
                timings = _data.interleaved(methods, len(queries))
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=30)
        truth = {"(a) SQL": truth_all, "(d) FAISS HNSW": truth_all, "halfvec index (SQL)": truth_all}
        truth[FLOOR] = None
        per_ef[ef] = {
            name: _summary(seconds, ids, truth.get(name, truth_collection)) for name, (seconds, ids) in timings.items()
        }
    ivfflat = _ivfflat(loaded, bare_sql, queries, texts, truth_all, truth_collection, corpus_collection.pk, memory,
                       workers)
    connection.close()
    sql.close()
    filtered.close()
    peer_result = None
    if peer:
        peer_result = _peer(corpus, loaded, efs, memory, workers)
        for ef in efs:
            seconds, ids = peer_result["results"][str(ef)]["seconds"], peer_result["results"][str(ef)]["ids"]
            per_ef[ef]["(e) langchain-postgres"] = _summary(seconds, [loaded.chunk_ids[i].tolist() for i in ids],
                                                            truth_all)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {HALFVEC_TABLE}")
    return {
        "n": n, "builds": builds, "index_mb": index_mb, "faiss_build": faiss_seconds,
        "halfvec": (halfvec_seconds, halfvec_mb), "ef": per_ef, "plans": plans, "exact_check": exact_check,
        "load_seconds": loaded.load_seconds, "peer": peer_result,
        "collection_share": float(mask.mean()), "ef_default": settings.HNSW_EF_SEARCH, "ivfflat": ivfflat,
    }


def _ivfflat(loaded, bare_sql: str, queries, texts, truth_all, truth_collection, collection_id: int, memory: str,
             workers: int) -> dict:
    """The IVFFlat option, built as the product builds it, timed as HNSW was; then HNSW is put back."""
    from django.test import override_settings

    from documents import search as retrieval
    from documents.search import indexes

    _data.progress("building IVFFlat in place of HNSW (manage.py vector_index --type ivfflat) ...")
    built = indexes.vector_index_build(kind="ivfflat", distance="cosine", space=loaded.space,
                                       maintenance_work_mem=memory, workers=workers)
    sql = _common.vector_connection()
    filters = retrieval.Filters(collections=(collection_id,))
    results = {}
    for probes in sorted({max(1, built.probes // 2), built.probes, 2 * built.probes}):
        _data.progress(f"IVFFlat probes={probes}: timing {len(queries)} queries ...")
        sql.execute(f"SET ivfflat.probes = {int(probes)}")

        def service(i):
            hits = retrieval.search(user=loaded.user, query=texts[i], k=K, mode="vector", query_vector=queries[i],
                                    filters=filters)
            return [hit.chunk_id for hit in hits]

        with override_settings(IVFFLAT_PROBES=probes):
            timings = _data.interleaved({
                "SQL": lambda i: [r[0] for r in sql.execute(bare_sql, [queries[i]]).fetchall()],
                "service": service,
            }, len(queries))
        results[probes] = {
            name: _summary(seconds, ids, truth_all if name == "SQL" else truth_collection)
            for name, (seconds, ids) in timings.items()
        }
    plan = _plan(sql, bare_sql, [queries[0]])
    sql.close()
    _data.progress("rebuilding the HNSW index ...")
    indexes.vector_index_build(kind="hnsw", distance="cosine", space=loaded.space, maintenance_work_mem=memory,
                               workers=workers)
    return {"lists": built.lists, "probes": built.probes, "build": built.seconds, "mb": built.megabytes,
            "results": results, "plan": plan}


def _summary(seconds: list[float], ids: list[list[int]], truth: np.ndarray | None) -> dict:
    p50, p95, qps = _data.percentiles(seconds)
    if truth is None:  # not a search
        return {"recall": float("nan"), "p50": p50, "p95": p95, "qps": qps, "returned": float("nan")}
    return {"recall": _data.recall(ids, truth), "p50": p50, "p95": p95, "qps": qps,
            "returned": float(np.mean([len(i) for i in ids]))}


def _model_name() -> str:
    from documents import embeddings

    return embeddings.get_backend().model_name


def _check_exact(conn, bare_sql: str, queries: np.ndarray, truth: np.ndarray) -> str:
    """The numpy ground truth against the SQL with index scans off (exact), on a few queries."""
    agree = 0
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        for query, expected in zip(queries, truth, strict=True):
            ids = [r[0] for r in conn.execute(bare_sql, [query]).fetchall()]
            agree += set(ids) == set(expected.tolist())
    return f"{agree}/{len(queries)} queries: numpy exact top-10 = SQL exact top-10 (index scans off)"


def _plan(conn, statement: str, params: list) -> str:
    """The plan's shape: node types (and index names), outermost first, without the vector literal."""
    return _data.plan_shape(conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0])


def _faiss(vectors: np.ndarray):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)  # M=16 as pgvector's m
    index.hnsw.efConstruction = 64
    started = time.perf_counter()
    index.add(vectors)
    return index, time.perf_counter() - started


def _halfvec(memory: str, workers: int, dim: int, space) -> tuple[float, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {HALFVEC_TABLE}")
        cursor.execute(f"CREATE TABLE {HALFVEC_TABLE} AS SELECT chunk_id AS id, embedding::vector({dim}) AS embedding "
                       f"FROM documents_chunkvector WHERE space_id = {int(space.pk)} AND distance = 'cosine'")
        cursor.execute(f"VACUUM ANALYZE {HALFVEC_TABLE}")
        cursor.execute(f"SET maintenance_work_mem = '{memory}'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {workers}")
        started = time.perf_counter()
        cursor.execute(f"CREATE INDEX {HALFVEC_INDEX} ON {HALFVEC_TABLE} USING hnsw "
                       f"((embedding::halfvec({dim})) halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)")
        seconds = time.perf_counter() - started
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
        cursor.execute(f"ANALYZE {HALFVEC_TABLE}")
    return seconds, _data.relation_mb(HALFVEC_INDEX)


def _start_server(ef: int, vectors_file: Path, token: str):
    """uvicorn serving the app (bench/_search_server.py) as ``make run`` does, with ef_search = ``ef``."""
    env = {**os.environ, "DATABASE_POOL": "true", "HNSW_EF_SEARCH": str(ef), "BENCH_QUERY_VECTORS": str(vectors_file),
           "BENCH_MODEL_NAME": _model_name()}
    return _common.serve_uvicorn("_search_server:application", vectors_file.parent / f"uvicorn-{ef}.log", env,
                                 headers={"Authorization": f"Bearer {token}"})


def _peer(corpus: _data.Corpus, loaded: _data.Loaded, efs: list[int], memory: str, workers: int) -> dict:
    """langchain-postgres on the same vectors, in its own venv (bench/_langchain_peer.py)."""
    python = _common.peer_python()
    folder = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    np.save(folder / "vectors.npy", corpus.vectors)
    np.save(folder / "queries.npy", corpus.queries)
    (folder / "texts.json").write_text(json.dumps(corpus.texts))
    url = _common.database_url("ragbench_search").replace("postgresql://", "postgresql+psycopg://", 1)
    request = {"url": url, "vectors": str(folder / "vectors.npy"), "queries": str(folder / "queries.npy"),
               "texts": str(folder / "texts.json"), "ef": efs, "k": K, "m": 16, "ef_construction": 64,
               "maintenance_work_mem": memory, "workers": workers, "warmup": 5, "out": str(folder / "out.json")}
    (folder / "request.json").write_text(json.dumps(request))
    _data.progress("langchain-postgres: loading its table, building its index, timing ...")
    subprocess.run([python, str(_common.ROOT / "bench" / "_langchain_peer.py"), str(folder / "request.json")],
                   check=True)
    return json.loads((folder / "out.json").read_text())


def _figure(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _print_table(title: str, settings: str, table: list[list[str]], notes: str = "") -> None:
    """--quick: the table on the terminal, not in BENCHMARKS.md."""
    print(f"\n{title} (--quick: not recorded)\n{settings}")
    for row in table:
        print(" | ".join(row))
    print(notes)


def record(results: dict, data_sets: list, efs: list[int], embed_ms: float, seconds: float, args,
           load: tuple[float, float, float]) -> None:
    from django.conf import settings

    for key, corpus in data_sets:
        result = results[key]
        rows = [["ef_search", "method", "recall@10", "returned", "p50 ms", "p95 ms", "QPS (1 client)", "p50 × (a)"]]
        for ef in efs:
            base = result["ef"][ef]["(a) SQL"]["p50"]
            for name, figures in result["ef"][ef].items():
                rows.append([str(ef), name, _figure(figures["recall"], 3), _figure(figures["returned"], 1),
                             f"{figures['p50']:.2f}", f"{figures['p95']:.2f}", f"{figures['qps']:.0f}",
                             f"{figures['p50'] / base:.2f}"])
        builds = "; ".join(
            f"{name} (maintenance_work_mem={memory}, max_parallel_maintenance_workers={workers}): {build:.1f} s"
            + (f" [{notices[0]}]" if notices else "")
            for name, (build, notices, memory, workers) in result["builds"].items()
        )
        peer = result["peer"]
        notes = [
            f"HNSW build (m=16, ef_construction=64): {builds}; index {result['index_mb']:.0f} MB.",
            f"halfvec expression index on a copy of the table: build {result['halfvec'][0]:.1f} s, "
            f"{result['halfvec'][1]:.0f} MB ({result['halfvec'][1] / result['index_mb']:.2f} × the vector index).",
            f"FAISS IndexHNSWFlat (M=16, efConstruction=64, {os.cpu_count()} threads) build "
            f"{result['faiss_build']:.1f} s.",
        ]
        if peer:
            notes.append(f"langchain-postgres 0.0.19: add_embeddings of the {result['n']:,} vectors "
                         f"{peer['load_seconds']:.0f} s, its HNSW build {peer['build_seconds']:.1f} s "
                         f"({peer['index_mb']:.0f} MB); its plan: {_data.plan_shape(peer['plan'])}.")
        ivf = result["ivfflat"]
        notes.append(
            f"IVFFlat, the option (`manage.py vector_index --type ivfflat`: lists = {ivf['lists']}, built in "
            f"{ivf['build']:.1f} s, {ivf['mb']:.0f} MB, in place of HNSW; plan: {ivf['plan']}): "
            + "; ".join(
                f"probes {probes}{' (√lists, the default)' if probes == ivf['probes'] else ''}: SQL recall@10 "
                f"{figures['SQL']['recall']:.3f}, p50 {figures['SQL']['p50']:.2f} ms; (b) service recall@10 "
                f"{figures['service']['recall']:.3f}, p50 {figures['service']['p50']:.2f} ms"
                for probes, figures in ivf["results"].items()
            ) + "."
        )
        notes += [
            f"Plans: (a) {result['plans']['(a) SQL']}; (a+f) {result['plans']['(a+f) SQL + filters']}.",
            f"Exact search check: {result['exact_check']}. Load (COPY) {result['load_seconds']:.0f} s.",
            f"(a+f), (b), (c) search alice's collection \"corpus\" ({result['collection_share']:.0%} of the chunks; "
            "recall against exact search within it); (a), (d), (e), halfvec search every chunk. (c0) is the "
            "simplest authenticated read of the same API (token lookup + one query), the floor under (c). (c) excludes "
            f"embedding the query text: all-MiniLM-L6-v2 int8 takes {embed_ms:.1f} ms p50 per query on this machine.",
        ]
        (_print_table if args.quick else _common.record)(
            f"Vector search side by side: {corpus.name} (bench/search.py{', ' + args.label if args.label else ''})",
            f"{len(corpus.queries)} queries, k={K}, one client, methods interleaved per query; "
            f"app ef_search {settings.HNSW_EF_SEARCH or 'auto (bench/ef_search.py)'}; DEBUG=false; "
            f"whole run {seconds / 60:.1f} min; load average {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) when it "
            f"started, {os.getloadavg()[0]:.1f} when it ended (the machine may be shared: rely on the ratios).",
            rows,
            notes="\n".join(f"- {note}" for note in notes),
        )


if __name__ == "__main__":
    main()
