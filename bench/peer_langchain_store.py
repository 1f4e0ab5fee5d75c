"""The peer of bench/ingest_store.py: langchain-postgres ``PGVector.add_embeddings`` in batches.

Runs in the peer's own venv (``_common.peer_python()``: langchain-postgres pins pgvector<0.4),
so it imports nothing from the app. Reads rows ``--start`` to ``--stop`` of ``vectors.npy`` and
``chunks.jsonl`` (text and metadata per line) from ``--data``, adds them to the collection
``bench`` (creating langchain's tables when missing), optionally builds the HNSW index after the
load, and prints one JSON line: ``{"rows", "seconds", "indexes", "build_seconds"}``. Only
``add_embeddings`` (and the index build) is timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np

HNSW = ("CREATE INDEX langchain_pg_embedding_hnsw ON langchain_pg_embedding "
        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")


class PrecomputedEmbeddings:
    """The vectors are given; langchain only needs an object with the Embeddings methods."""

    def embed_documents(self, texts):
        raise NotImplementedError("the benchmark passes precomputed vectors")

    def embed_query(self, text):
        raise NotImplementedError("the benchmark passes precomputed vectors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="postgresql:// URL of the bench database")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--build-hnsw-after", action="store_true", help="CREATE the HNSW index after the load")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--parallel-workers", type=int, default=1)
    args = parser.parse_args()

    from langchain_postgres import PGVector
    from sqlalchemy import text

    vectors = np.load(args.data / "vectors.npy", mmap_mode="r")[args.start : args.stop]
    texts, metadatas = [], []
    with (args.data / "chunks.jsonl").open(encoding="utf-8") as lines:
        for line in itertools.islice(lines, args.start, args.stop):
            row = json.loads(line)
            texts.append(row["text"])
            metadatas.append(row["metadata"])
    # What an embedding model hands langchain: lists of floats.
    embeddings = np.asarray(vectors).tolist()
    url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", args.url)
    store = PGVector(
        PrecomputedEmbeddings(), connection=url, embedding_length=vectors.shape[1], collection_name="bench",
        use_jsonb=True,
    )
    engine = store._engine
    with engine.begin() as connection:
        # As on the other tables: no autovacuum waking up in the middle of a run.
        connection.execute(text("ALTER TABLE langchain_pg_embedding SET (autovacuum_enabled = false)"))
    with engine.connect() as connection:
        definitions = connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE tablename = 'langchain_pg_embedding'")
        ).scalars().all()
        before = connection.execute(text("SELECT count(*) FROM langchain_pg_embedding")).scalar_one()

    started = time.perf_counter()
    for start in range(0, len(texts), args.batch):
        end = start + args.batch
        store.add_embeddings(texts=texts[start:end], embeddings=embeddings[start:end], metadatas=metadatas[start:end])
    seconds = time.perf_counter() - started

    build_seconds = None
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT count(*) FROM langchain_pg_embedding")).scalar_one() - before
        if args.build_hnsw_after:
            connection.execute(text(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'"))
            connection.execute(text(f"SET max_parallel_maintenance_workers = {args.parallel_workers}"))
            started = time.perf_counter()
            connection.execute(text(HNSW))
            connection.commit()
            build_seconds = time.perf_counter() - started
    if stored != len(texts):
        raise SystemExit(f"langchain stored {stored} rows, not {len(texts)}")
    kinds = []
    for definition in definitions:
        method = re.search(r"USING (\w+)", definition).group(1)
        kinds.append("unique btree" if method == "btree" and "UNIQUE" in definition else method)
    summary = ", ".join(f"{kinds.count(k)}× {k}" for k in sorted(set(kinds)))
    print(json.dumps({"rows": len(texts), "seconds": seconds, "indexes": summary, "build_seconds": build_seconds}))


if __name__ == "__main__":
    main()
