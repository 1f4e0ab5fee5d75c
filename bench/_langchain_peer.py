"""langchain-postgres's PGVector on the same vectors, for bench/search.py.

    <peer python> bench/_langchain_peer.py REQUEST.json

Runs in its own venv (``_common.peer_python()``: langchain-postgres pins pgvector<0.4). The
request names the database URL (``postgresql+psycopg://``), .npy files of the vectors and
queries, a JSON list of the texts, the HNSW parameters and the ef_search values. The peer loads
the vectors with ``add_embeddings`` (in batches), builds the same HNSW index on langchain's table
with the same build settings, then times ``similarity_search_by_vector`` at each ef_search. It
writes seconds and ids (the vectors' row numbers) per query, and the plan of its query, to
``out``; its tables are dropped at the end.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import sqlalchemy
from langchain_core.embeddings import Embeddings
from langchain_postgres import PGVector

INDEX = "langchain_pg_embedding_hnsw"


class Precomputed(Embeddings):
    """The benchmark hands over vectors; nothing is embedded here."""

    def embed_documents(self, texts):
        raise NotImplementedError

    def embed_query(self, text):
        raise NotImplementedError


def store(engine, dim: int) -> PGVector:
    return PGVector(Precomputed(), connection=engine, embedding_length=dim, collection_name="bench",
                    use_jsonb=True, create_extension=False)


def _capture(sink: list):
    """An SQLAlchemy listener that keeps each statement and its parameters (to EXPLAIN the search)."""

    def listener(conn, cursor, statement, parameters, context, executemany):
        sink.append((statement, parameters))

    return listener


def main() -> None:
    request = json.loads(open(sys.argv[1]).read())
    vectors, queries = np.load(request["vectors"]), np.load(request["queries"])
    texts = json.loads(open(request["texts"]).read())
    dim, k = vectors.shape[1], request["k"]
    engine = sqlalchemy.create_engine(request["url"])
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection CASCADE")
    loader = store(engine, dim)
    started = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        stop = min(start + 1000, len(vectors))
        loader.add_embeddings(texts=texts[start:stop], embeddings=vectors[start:stop].tolist(),
                              ids=[str(i) for i in range(start, stop)])
    load_seconds = time.perf_counter() - started
    with engine.begin() as connection:
        connection.exec_driver_sql(f"SET maintenance_work_mem = '{request['maintenance_work_mem']}'")
        connection.exec_driver_sql(f"SET max_parallel_maintenance_workers = {int(request['workers'])}")
        started = time.perf_counter()
        connection.exec_driver_sql(
            f"CREATE INDEX {INDEX} ON langchain_pg_embedding USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {int(request['m'])}, ef_construction = {int(request['ef_construction'])})"
        )
        build_seconds = time.perf_counter() - started
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE langchain_pg_embedding")
        index_mb = connection.exec_driver_sql(f"SELECT pg_relation_size('{INDEX}')").scalar() / 2**20
    results = {}
    plan = ""
    for ef in request["ef"]:
        engine_ef = sqlalchemy.create_engine(request["url"], connect_args={"options": f"-c hnsw.ef_search={ef}"})
        captured: list = []
        sqlalchemy.event.listen(engine_ef, "before_cursor_execute", _capture(captured))
        searcher = store(engine_ef, dim)
        for query in queries[: request["warmup"]]:
            searcher.similarity_search_by_vector(query.tolist(), k=k)
        seconds, ids = [], []
        for query in queries:
            started = time.perf_counter()
            documents = searcher.similarity_search_by_vector(query.tolist(), k=k)
            seconds.append(time.perf_counter() - started)
            ids.append([int(document.id) for document in documents])
        results[str(ef)] = {"seconds": seconds, "ids": ids}
        if not plan:
            statement, parameters = next((s, p) for s, p in reversed(captured) if "ORDER BY" in s)
            raw = engine_ef.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                plan = json.dumps(cursor.fetchone()[0])
            finally:
                raw.close()
        engine_ef.dispose()
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection CASCADE")
    engine.dispose()
    with open(request["out"], "w") as out:
        json.dump({"load_seconds": load_seconds, "build_seconds": build_seconds, "index_mb": index_mb,
                   "plan": plan, "results": results}, out)


if __name__ == "__main__":
    main()
