"""Changing a collection's embedding model: the backfill's rate against plain ingestion's, and search meanwhile.

    python bench/embedding_migration.py [--quick] [--chunks 20000] [--target local|hashing] [--queries 100]

A collection of SciFact sentences (one chunk each, 20 per document) is stored in the database
``ragbench_migration`` with its vectors in the default space (hashing-384: quick to write), then migrated to
the ``--target`` space (the local MiniLM model, or hashing-256). Two comparisons, each in this one run:

1. Embedding throughput, chunks/s, on the same chunk texts with the target's backend: plain ingestion's
   embedding step (``embeddings.embed_in_batches``, as documents.pipeline embeds a document) against the
   backfill (documents.spaces.tasks.backfill, one run: read stored text, embed, COPY into the target's partition
   and commit the cursor per batch, SPACE_BACKFILL_BATCH chunks each), its HNSW index build counted apart.
2. Vector search latency, p50/p95 (``documents.search.search``, mode vector, k=10, the query embedded by the
   active space's model, SciFact claims): before the migration, during the backfill (running in a process of
   its own, as in a worker, beside the query loop), after the switch, and after a rollback. Errors and empty
   results are counted (both must be 0).

``--quick`` (CI): 1,500 chunks migrated to hashing-256, 30 queries; printed, not recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _data  # noqa: E402

CHUNKS_PER_DOCUMENT = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 chunks to hashing-256, 30 queries (CI)")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--target", choices=("local", "hashing"), default="local")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--backfill-migration", type=int, help=argparse.SUPPRESS)  # the backfill's own process
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backfill_migration:
        backfill_here(args.backfill_migration, args.database)
        return
    if args.quick:
        args.chunks, args.target, args.queries = 1_500, "hashing", 30
    if args.target == "local":
        _common.require_shared("models/all-MiniLM-L6-v2-int8")
    database = "ragbench_migration_quick" if args.quick else "ragbench_migration"
    _common.setup_django(database, LOG_LEVEL="WARNING", EMBEDDING_BACKEND="hashing", EMBEDDING_DIMENSIONS="384")
    from django.conf import settings
    from django.db import connection

    settings.RATE_LIMITS = {}

    texts = _data.scifact_sentences()[0][: args.chunks]
    claims = (_data.scifact_claims() * 4)[: args.queries]
    collection, user = populate(texts)
    target = target_space(args.target)
    ingest_rate = ingestion_rate(target, texts)
    before = latencies(user, collection, claims)
    backfill_seconds, index_seconds, during = migrate_while_searching(collection, target, user, claims, database)
    switch_to(collection)
    after = latencies(user, collection, claims)
    connection.close()  # as a process started after the switch: a session that never searched the old space
    after_fresh = latencies(user, collection, claims)
    rollback_to(collection)
    rolled_back = latencies(user, collection, claims)

    n = len(texts)
    backfill_rate = n / max(backfill_seconds, 1e-6)
    table = [
        ["measure", "value"],
        ["chunks", f"{n:,}"],
        ["target space", target.name],
        ["plain ingestion's embedding, chunks/s", f"{ingest_rate:,.0f}"],
        [
            "backfill (read, embed, COPY, cursor), chunks/s",
            f"{backfill_rate:,.0f} ({backfill_rate / ingest_rate:.2f}× ingestion's)",
        ],
        ["target's HNSW index build (CONCURRENTLY, sized) and gap pass, s", f"{index_seconds:.1f}"],
    ]
    for name, (seconds, errors, empty) in (
        ("before", before),
        ("during the backfill", during),
        ("after the switch", after),
        ("after the switch, a new connection", after_fresh),
        ("after a rollback", rolled_back),
    ):
        shown = "{:.1f} / {:.1f}".format(*_data.percentiles(seconds)[:2]) if seconds else "— / —"
        table.append(
            [f"search {name}: p50 / p95 ms (answered, errors, empty)", f"{shown} ({len(seconds)}, {errors}, {empty})"]
        )
    _common.report(
        args.quick,
        "Embedding migration: backfill vs ingestion, search before/during/after (bench/embedding_migration.py)",
        f"{n:,} SciFact sentences (one chunk each) from hashing-384 to {target.name}; search mode vector, k=10, "
        f"{len(claims)} SciFact claims per phase; SPACE_BACKFILL_BATCH={settings.SPACE_BACKFILL_BATCH}",
        table,
        "Search latency includes embedding the query with the active space's model (hashing before and after a "
        "rollback, the target's after the switch).",
    )
    p95 = {
        name: f"{_data.percentiles(seconds)[1]:.1f}" if seconds else "none"
        for name, (seconds, _, _) in (("before", before), ("during", during), ("after", after_fresh))
    }
    failed = sum(errors + empty for _, errors, empty in (before, during, after, after_fresh, rolled_back))
    print(
        f"chunks={n} ingestion_chunks_per_s={ingest_rate:.0f} backfill_chunks_per_s={backfill_rate:.0f} "
        f"backfill_over_ingestion={backfill_rate / ingest_rate:.2f} index_s={index_seconds:.1f} "
        f"search_p95_before_ms={p95['before']} search_p95_during_ms={p95['during']} "
        f"search_p95_after_ms={p95['after']} failed_or_empty={failed}"
    )
    if any(errors or empty for _, errors, empty in (before, during, after, after_fresh, rolled_back)):
        sys.exit("search failed or came back empty during the migration: see the table")


def populate(texts: list[str]):
    """A fresh collection of ``texts`` as chunks, their vectors in the default space (hashing-384)."""
    from django.contrib.auth import get_user_model

    from documents.models import Chunk, Collection, Document
    from documents.spaces import backend_for
    from documents.spaces.vectors import write_vectors

    user, _ = get_user_model().objects.get_or_create(username="bench-migration")
    Collection.objects.filter(owner=user).delete()
    collection = Collection.objects.create(owner=user, name="SciFact migration")
    space = collection.active_space
    assert space is not None  # Collection.save gives it the default space
    _data.progress(f"storing {len(texts):,} chunks in {space} ...")
    documents = Document.objects.bulk_create(
        Document(
            owner=user,
            collection=collection,
            title=f"abstracts {start}",
            sha256=f"{start:064x}",
            status=Document.Status.READY,
            chunk_count=len(texts[start : start + CHUNKS_PER_DOCUMENT]),
        )
        for start in range(0, len(texts), CHUNKS_PER_DOCUMENT)
    )
    chunks = Chunk.objects.bulk_create(
        Chunk(
            document=documents[i // CHUNKS_PER_DOCUMENT],
            collection=collection,
            ordinal=i % CHUNKS_PER_DOCUMENT,
            text=text,
            char_end=len(text),
            token_count=len(text.split()),
        )
        for i, text in enumerate(texts)
    )
    vectors = backend_for(space).embed_documents(texts)
    write_vectors(
        space=space,
        rows=(
            (c.pk, collection.pk, c.document_id, collection.distance, v) for c, v in zip(chunks, vectors, strict=True)
        ),
    )
    with _connection().cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk")
        cursor.execute("ANALYZE documents_chunkvector")
    return collection, user


def _connection():
    from django.db import connection

    return connection


def target_space(kind: str):
    """The target space: the local MiniLM model, or hashing-256 (added once, reused by later runs)."""
    from documents.models import EmbeddingSpace
    from documents.spaces.migration import space_add

    name = "bench-minilm" if kind == "local" else "bench-hashing-256"
    existing = EmbeddingSpace.objects.filter(name=name).exclude(status=EmbeddingSpace.Status.RETIRED).first()
    if existing is not None:
        return existing
    if kind == "local":
        return space_add(name=name, backend="local", dimensions=384)
    return space_add(name=name, backend="hashing", model="hashing-256", dimensions=256)


def ingestion_rate(target, texts: list[str]) -> float:
    """Chunks/s of the pipeline's embedding step with the target's backend (warmed up first)."""
    from documents import embeddings
    from documents.spaces import backend_for

    backend = backend_for(target)
    embeddings.embed_in_batches(backend, texts[:64])
    _data.progress(f"plain ingestion: embedding {len(texts):,} chunks ...")
    started = time.perf_counter()
    embeddings.embed_in_batches(backend, texts)
    return len(texts) / (time.perf_counter() - started)


def latencies(user, collection, claims: list[str], warmup: int = 5) -> tuple[list[float], int, int]:
    """(seconds per query, errors, empty results) of a vector search of the collection per claim."""
    from documents.search import Filters, search

    filters = Filters(collections=(collection.pk,))
    seconds, errors, empty = [], 0, 0
    for number, claim in enumerate(claims[:warmup] + claims):
        started = time.perf_counter()
        try:
            found = search(user=user, query=claim, k=10, filters=filters, mode="vector")
        except Exception as error:  # counted, and shown: the measure is that there are none
            errors += 1
            _data.progress(f"search failed: {str(error).splitlines()[0]}")
            continue
        if number >= warmup:
            seconds.append(time.perf_counter() - started)
            empty += not found
    return seconds, errors, empty


def migrate_while_searching(
    collection, target, user, claims, database: str
) -> tuple[float, float, tuple[list[float], int, int]]:
    """Start the migration, run its backfill in a process of its own (as a worker would: one run, no slices) and
    search here until it ends.

    (seconds of the batches, seconds of the index build and the gap pass after them, latencies during).
    """
    import subprocess

    from django.utils.dateparse import parse_datetime

    from documents.models import SpaceMigration
    from documents.spaces import migration as service
    from documents.spaces.migration import migration_start

    # Nothing is queued: a worker elsewhere must not get this database's migration ids.
    service.send_backfill = lambda migration_id: True
    migration = migration_start(collection=collection, target=target)
    _data.progress(f"backfilling {collection} into {target} (another process) while searching ...")
    child = subprocess.Popen(
        [sys.executable, __file__, "--backfill-migration", str(migration.pk), "--database", database],
        stdout=subprocess.PIPE,
        text=True,
    )
    seconds: list[float] = []
    errors = empty = 0
    while child.poll() is None:
        more, e, m = latencies(user, collection, claims[:10], warmup=0)
        seconds += more
        errors += e
        empty += m
    output, _ = child.communicate()
    started, ended = (parse_datetime(line.split("=", 1)[1]) for line in output.split()[-2:])
    migration.refresh_from_db()
    if child.returncode or migration.state != SpaceMigration.State.READY:
        sys.exit(f"the backfill ended {migration.state}: {migration.error}")
    assert migration.backfilled_at is not None and started is not None and ended is not None
    batches = (migration.backfilled_at - started).total_seconds()
    index = (ended - migration.backfilled_at).total_seconds()
    return batches, index, (seconds, errors, empty)


def backfill_here(migration_id: int, database: str) -> None:
    """The child process: one run of the backfill (no slices: nothing queued), its start and end on stdout."""
    _common.setup_django(database, LOG_LEVEL="WARNING")
    from django.utils import timezone

    from documents.spaces import migration as service
    from documents.spaces.tasks import backfill

    service.send_backfill = lambda migration_id: True
    print(f"started={timezone.now().isoformat()}", flush=True)
    backfill(migration_id, slice_seconds=float("inf"))
    print(f"ended={timezone.now().isoformat()}", flush=True)


def switch_to(collection) -> None:
    from documents.spaces import quality
    from documents.spaces.migration import switch

    result = quality.evaluate(collection=collection, sample=20)
    _data.progress(f"evaluation: {result}")
    switch(collection=collection, force=True)
    collection.refresh_from_db()


def rollback_to(collection) -> None:
    from documents.spaces.migration import rollback

    rollback(collection=collection)
    collection.refresh_from_db()


if __name__ == "__main__":
    main()
