"""Where an API search's time goes: bare SQL, the search service, the same request in-process and over uvicorn.

    python bench/request_path.py [--n 100000] [--queries 200] [--quick]

The clustered synthetic chunks of bench/search.py (``_data.clustered``, its collection layout: alice searches her
collection "corpus", 80% of the chunks), an HNSW index as the app builds it, ef_search 100. The same queries,
each way in a random order per query (``_data.interleaved``), one at a time:

- (a) bare SQL: pgvector's documented query, prepared, binary vector (what bench/search.py calls (a));
- (a2) the same query returning what a search returns: its rows joined to the chunks' text, heading and page and
  their documents' titles (on the same connection, prepared): what the passages themselves cost;
- (b-sql) ``search()``'s own statements (the scope statement, then the vector arm), sent as it sends them (one
  psycopg pipeline, bound on the server, prepared after a few runs) on that raw connection, without Django's
  cursors or the Python around them: (b) less this is ``search()``'s client side, this less (a2) its SQL's;
- (b) ``documents.search.search()`` with the query vector given (what (b) is there);
- (b0) the same with its vector statement planned for each search, as every search was before its arm could run on
  a cached plan (documents.search.sql.CACHED_PLAN_SHARE set out of reach for these calls);
- (h) and (h0): the same two as hybrid searches (the chat's and the API's default); in (h0) the keyword statement
  is planned for each search too (documents.search.sql.keyword_plans reads the same share);
- (c-in) GET /api/v1/search through the product's ASGI application called in this process (no socket, no
  server): Django's handler, the middleware, django-ninja, the bearer token, the search, the JSON;
- (c-in0) the same with the pool's check as Django sets it (psycopg_pool's check_connection: a round trip before
  each request's first query) instead of the product's (core.postgresql: the socket, a round trip only when the
  server closed or wrote to it);
- (c) the same GET over HTTP to uvicorn serving the product's application (what (c) is there);
- (c1) the same GET to uvicorn serving Django's stock ASGI handler on the same settings, which takes several
  thread hops where the product's (core.asgi.OneHopASGIHandler) takes one.

Both servers embed the query text by looking its vector up (bench/_search_server.py), so no model time is in
any figure. Then the in-process request's wall time split at its seams (a timer around the view, the bearer
token's check and the search inside it): before the view (ASGI handler, middleware in, URL, thread hops), the
token, the view's own work (parameters, response), the search, after the view (middleware out, response,
connection back to the pool). Appends one table to bench/BENCHMARKS.md; ``--quick`` (3,000 chunks, 20
queries) is for CI and not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import secrets
import statistics
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
EF_SEARCH = 100
LAYOUT = [("corpus", "alice", False, 0.8), ("shared", "bob", True, 0.1), ("private", "bob", False, 0.1)]
SEAMS = ("before the view", "bearer token", "view, besides token and search", "search()", "after the view")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3,000 chunks, 20 queries: no record (CI)")
    parser.add_argument("--label", default="", help="added to the title in BENCHMARKS.md (e.g. 'before ...')")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries = 3_000, 20
    database = f"ragbench_request_path_{args.n}"
    _common.setup_django(
        database, LOG_LEVEL="WARNING", DEBUG="false", SECRET_KEY=secrets.token_urlsafe(32),
        ALLOWED_HOSTS="127.0.0.1,localhost", DATABASE_POOL="true", HNSW_EF_SEARCH=str(EF_SEARCH),
    )
    from core.models import ApiToken
    from documents import embeddings
    from documents import search as retrieval
    from documents.models import Collection

    started, load = time.perf_counter(), os.getloadavg()
    corpus = _data.clustered(n=args.n, queries=args.queries)
    if not Collection.objects.filter(name="corpus").exists():  # loaded once per size: the database is kept
        _data.progress(f"loading {args.n:,} chunks and building their HNSW index ...")
        loaded = _data.load(corpus, layout=LAYOUT)
        _data.build_hnsw(loaded.space, maintenance_work_mem="1GB", workers=max(1, (os.cpu_count() or 2) - 1))
    from django.contrib.auth import get_user_model

    from documents.spaces import vectors as spaces

    space = spaces.default()
    alice = get_user_model().objects.get(username="alice")
    collection = Collection.objects.get(name="corpus")
    token = ApiToken.issue(user=alice, name="request path")[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-request-path-"))
    np.savez(folder / "queries.npz", texts=np.asarray(corpus.query_texts), vectors=corpus.queries)
    os.environ["BENCH_QUERY_VECTORS"] = str(folder / "queries.npz")
    os.environ["BENCH_MODEL_NAME"] = embeddings.get_backend().model_name
    import _search_server  # noqa: F401  (this process looks query vectors up too, for (c-in))

    from ragsite.asgi import application

    servers = {name: _common.serve_uvicorn(app, folder / f"uvicorn-{name}.log")
               for name, app in (("product", "_search_server:application"),
                                 ("django stock", "_search_server:django_stock"))}
    try:
        sql = _common.vector_connection()
        sql.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
        bare = _data.bare_sql(space)
        passages = _passages_sql(bare)
        from documents.search import query as search_query

        # As search() sends it for this vector search without filters of its own (its arm may run on a cached plan).
        scope_statement = search_query._scope_sql(alice, retrieval.Filters(collections=(collection.pk,)), EF_SEARCH,
                                                  (space.pk, "cosine"))

        def statements_alone(i: int) -> list[int]:
            statements = [scope_statement, search_query._vector_sql(
                retrieval.Filters(collections=(collection.pk,)), K, queries[i], space, "cosine")]
            cursors = [sql.cursor() for _ in statements]
            with sql.pipeline():
                for cursor, (text, params) in zip(cursors, statements, strict=True):
                    cursor.execute(text, params)
            return [row[0] for row in cursors[1].fetchall()]
        queries, texts = corpus.queries, corpus.query_texts

        from documents.search import sql as search_sql

        def searched(mode: str, *, planned_each_time: bool = False):
            def call(i: int) -> list[int]:
                share = search_sql.CACHED_PLAN_SHARE
                if planned_each_time:
                    search_sql.CACHED_PLAN_SHARE = 1e9  # no arm is that wide
                try:
                    return [hit.chunk_id for hit in retrieval.search(
                        user=alice, query=texts[i], k=K, mode=mode, query_vector=queries[i],
                        filters=retrieval.Filters(collections=(collection.pk,)))]
                finally:
                    search_sql.CACHED_PLAN_SHARE = share

            return call
        headers = {"Authorization": f"Bearer {token}"}
        loop = _event_loop()

        def query_string(i: int) -> str:
            return urlencode({"q": texts[i], "mode": "vector", "collection": collection.pk, "k": K})

        def over_http(name: str):
            client = http.client.HTTPConnection("127.0.0.1", servers[name][1], timeout=60)

            def call(i: int) -> list[int]:
                client.request("GET", f"/api/v1/search?{query_string(i)}", headers=headers)
                response = client.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{name}: /api/v1/search answered {response.status}: {body[:200]!r}")
                return []

            return call

        def in_process(i: int) -> list[int]:
            loop.run_until_complete(_asgi_get(application, "/api/v1/search", query_string(i), token))
            return []

        from django.db import connections
        from psycopg_pool import ConnectionPool

        from core.postgresql.base import DatabaseWrapper

        def in_process_pinged(i: int) -> list[int]:
            """(c-in) with the pool's check as Django sets it: psycopg_pool's round trip before each request."""
            default = connections["default"]
            assert isinstance(default, DatabaseWrapper) and default.pool is not None
            pool = default.pool
            # Not ConnectionPool.check_connection itself, which the engine's pool property replaces with its own.
            ours, pool._check = pool._check, lambda connection: ConnectionPool.check_connection(connection)
            try:
                return in_process(i)
            finally:
                pool._check = ours

        methods = {
            "(a) bare SQL": lambda i: [row[0] for row in sql.execute(bare, [queries[i]], prepare=True).fetchall()],
            "(a2) bare SQL + the passages (text, heading, page, title)": lambda i: [
                row[0] for row in sql.execute(passages, [queries[i]], prepare=True).fetchall()],
            "(b-sql) search()'s statements alone (scope + vector arm, one raw pipeline)": statements_alone,
            "(b) search()": searched("vector"),
            "(b0) search(), its arm planned for each search": searched("vector", planned_each_time=True),
            "(h) search(), hybrid": searched("hybrid"),
            "(h0) search(), hybrid, both statements planned for each search":
                searched("hybrid", planned_each_time=True),
            "(c-in) GET /api/v1/search, in-process ASGI": in_process,
            "(c-in0) the same, each pooled connection checked by a round trip (Django's pool check)": in_process_pinged,
            "(c) GET /api/v1/search, uvicorn, the product's handler": over_http("product"),
            "(c1) GET /api/v1/search, uvicorn, Django's stock handler": over_http("django stock"),
        }
        _data.progress(f"timing {len(queries)} queries, {len(methods)} ways, interleaved ...")
        timed = _data.interleaved(methods, len(queries))
        _data.progress("splitting the in-process request at its seams ...")
        seams = _seams(lambda i: in_process(i), len(queries))
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)

    sql_p50 = statistics.median(timed["(a) bare SQL"][0])
    table = [["way", "p50 ms", "p95 ms", "p50 × (a)"]]
    for name, (seconds, _) in timed.items():
        p50, p95, _qps = _data.percentiles(seconds)
        table.append([name, f"{p50:.2f}", f"{p95:.2f}", f"{p50 / (sql_p50 * 1000):.2f}"])
    table.append(["**(c-in) split at its seams (p50 of each part)**", "", "", ""])
    for seam in SEAMS:
        table.append([f"  {seam}", f"{statistics.median(seams[seam]) * 1000:.2f}", "", ""])
    settings_line = (
        f"{args.n:,} clustered 384-d chunks (alice's collection: 80%), {len(queries)} queries, k={K}, "
        f"ef_search {EF_SEARCH}, mode=vector, one client, the ways interleaved per query; DEBUG=false, "
        f"DATABASE_POOL=true; uvicorn with httptools + uvloop, one process each; load average {load[0]:.1f} "
        f"when it started, {os.getloadavg()[0]:.1f} at the end; whole run {(time.perf_counter() - started) / 60:.1f} "
        "min."
    )
    notes = (
        "(a2) less (a) is what returning the passages costs; (b-sql) less (a2) what search()'s SQL costs beyond "
        "that (its scope statement: access control and settings; the arm's collection filter; planning the arm for "
        "the covered collections, sql.CUSTOM_PLANS); (b) less (b-sql) is search()'s Python and Django's cursors. "
        "(c-in) is the request without a socket or a server: its time less (b)'s is the framework's. The seams: "
        "*before the view* runs from the ASGI call to django-ninja's operation (Django's ASGI handler, the "
        "middleware on the way in, URL resolution, the thread hops to the sync code); *bearer token* is "
        "core.auth's check (a connection from the pool, which checks it, and one query); *view, besides* is "
        "django-ninja's parameters and response; *after the view* is the middleware on the way out, sending "
        "the response and request_finished (the connection back to the pool)."
    )
    title = "Where an API search's time goes (bench/request_path.py)" + (f", {args.label}" if args.label else "")
    _common.report(args.quick, title, settings_line, table, notes)
    ratio = {name.split(")")[0].strip("("): statistics.median(seconds) / sql_p50
             for name, (seconds, _) in timed.items()}
    print(" ".join(f"{key}_x_sql={value:.2f}" for key, value in ratio.items()))


def _passages_sql(bare: str) -> str:
    """(a)'s query returning what a search returns: the chunks' text, heading and page, their documents' titles."""
    from documents.search.sql import CHUNK, DOCUMENT

    nearest = bare.replace("SELECT v.chunk_id ", "SELECT v.chunk_id, v.document_id ", 1)
    return (
        f"WITH nearest AS MATERIALIZED ({nearest}) SELECT n.chunk_id, n.document_id, "
        f"(SELECT d.title FROM {DOCUMENT} d WHERE d.id = n.document_id), c.page, c.heading, c.text "
        f"FROM nearest n JOIN {CHUNK} c ON c.id = n.chunk_id"
    )


def _seams(call, count: int) -> dict[str, list[float]]:
    """The in-process request timed at its seams, by timers around the operation, the token check and the search."""
    from ninja import operation

    from core.auth import BearerToken
    from documents import search as retrieval

    marks: dict[str, float] = {}

    def timed(key: str, function):
        def wrapper(*args, **kwargs):
            marks[f"{key}0"] = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                marks[f"{key}1"] = time.perf_counter()
        return wrapper

    originals = (operation.Operation.run, BearerToken.authenticate, retrieval.search)
    operation.Operation.run = timed("view", originals[0])  # type: ignore[method-assign]
    BearerToken.authenticate = timed("token", originals[1])  # type: ignore[method-assign]
    retrieval.search = timed("search", originals[2])
    parts: dict[str, list[float]] = {seam: [] for seam in SEAMS}
    try:
        for i in range(count):
            started = time.perf_counter()
            call(i)
            ended = time.perf_counter()
            token, search = marks["token1"] - marks["token0"], marks["search1"] - marks["search0"]
            parts["before the view"].append(marks["view0"] - started)
            parts["bearer token"].append(token)
            parts["view, besides token and search"].append(marks["view1"] - marks["view0"] - token - search)
            parts["search()"].append(search)
            parts["after the view"].append(ended - marks["view1"])
    finally:
        operation.Operation.run, BearerToken.authenticate, retrieval.search = originals  # type: ignore[method-assign]
    return parts


async def _asgi_get(application, path: str, query_string: str, token: str) -> None:
    """One GET through the ASGI application, as uvicorn would call it (the body read once, then no disconnect)."""
    sent: list[dict] = []
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query_string.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    await application(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"in-process /api/v1/search answered {sent[0]['status']}")


def _event_loop():
    import uvloop

    return uvloop.new_event_loop()  # as uvicorn runs the application


if __name__ == "__main__":
    main()
