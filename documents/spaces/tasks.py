"""The backfill of an embedding space (Celery), its sweep, and the workers' space heartbeat.

The backfill re-embeds a collection's *stored* chunk text (heading and text, as the pipeline embedded it: no
re-parsing) with the target space's backend, SPACE_BACKFILL_BATCH chunks at a time in chunk-id order. Each
batch's vectors, the cursor (the last chunk id done) and the count commit in ONE transaction, under the
migration's row lock, and only if the cursor is still the one the batch started from: a worker killed between
two batches leaves the cursor exactly at the last committed batch, and a second run of the same migration
(a redelivered message next to a re-sent one) can never write a batch twice. The embedding itself happens
outside any transaction.

Chunk ids are taken from a sequence, and a transaction may commit a lower id after a higher one was read: once
the cursor reaches the end, a pass over the chunks still without a vector in the target catches those (and any
chunk a dual write missed). Then the target's HNSW index is built CONCURRENTLY (writes go on), sized like
documents.search.indexes builds, and the migration is ``ready``.

A run embeds for at most SLICE_SECONDS, then queues its continuation: a long backfill never holds a worker
(or the large-document queue) for hours, nor meets Celery's time limit. A run holds a session advisory lock on
its migration; the lock dies with its connection, so the sweep knows a backfill whose worker was killed
(no lock, nothing written lately) and sends it again; it resumes from the cursor.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import psycopg
from billiard.process import current_process
from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from documents import embeddings
from documents.chunking import embedding_text
from documents.models import Chunk, ChunkVector, Collection, EmbeddingSpace, SpaceMigration
from documents.search.indexes import sized_memory
from documents.spaces import heartbeat, migration, storage
from documents.spaces.registry import backend_for
from documents.spaces.vectors import write_vectors

logger = logging.getLogger(__name__)

SLICE_SECONDS = 60.0
# The first key of the migrations' session advisory locks (the second is the migration's id).
LOCK_CLASS = 0x5350  # "SP"
DATABASE_DOWN = (OperationalError, InterfaceError, psycopg.OperationalError)


class Superseded(Exception):
    """Another run moved the cursor (or the migration's state) since this batch started: drop the batch."""


# ---------------------------------------------------------------------------------------------------------------
# tasks


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=DATABASE_DOWN,
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=5,
    # The batches run in slices of SLICE_SECONDS; the index build after the last one may take long.
    soft_time_limit=12 * 3600,
    time_limit=12 * 3600 + 60,
)
def backfill_space(migration_id: int) -> str:
    """Run (or resume) the backfill of one migration; a message for a finished or running one does nothing."""
    return backfill(migration_id)


@worker_ready.connect
def _worker_ready(sender=None, **kwargs) -> None:
    """A solo/threads worker beats itself. (The backfill its predecessor left: ragsite.celery's sweep.)"""
    if "prefork" not in type(getattr(sender, "pool", None)).__module__:
        heartbeat.start(role="worker")


@worker_process_init.connect
def _pool_process_started(**kwargs) -> None:
    """Each prefork pool process embeds, so each one says which spaces it can embed for. (The solo pool sends
    this signal from the worker's own process, which ``_worker_ready`` covers: a worker embedded in another
    program, as the tests' is, beats for nobody.)"""
    if current_process().name != "MainProcess":
        heartbeat.start(role="worker")


# ---------------------------------------------------------------------------------------------------------------
# the backfill


@contextmanager
def migration_lock(migration_id: int) -> Iterator[bool]:
    """This session's advisory lock on the migration (False: another run holds it). Released on the way out,
    or by the server when the connection dies with its worker."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, migration_id])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, migration_id])
            except DATABASE_DOWN:
                pass  # the connection is gone, and its lock with it


def lock_held(migration_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
            "AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = "
            "current_database()))",
            [LOCK_CLASS, migration_id],
        )
        return cursor.fetchone()[0]


def backfills_sweep() -> list[int]:
    """Re-send the backfill of every migration still backfilling or indexing that no run holds (its worker died,
    or its message was lost) and that has not moved for INGEST_STALE_SECONDS (a message may be waiting in the
    queue behind others)."""
    stale_before = timezone.now() - timedelta(seconds=settings.INGEST_STALE_SECONDS)
    waiting = SpaceMigration.objects.filter(
        state__in=[SpaceMigration.State.BACKFILLING, SpaceMigration.State.INDEXING], updated_at__lt=stale_before
    ).values_list("pk", flat=True)
    resent = []
    for migration_id in waiting:
        if lock_held(migration_id):
            continue
        SpaceMigration.objects.filter(pk=migration_id).update(updated_at=timezone.now())
        migration.send_backfill(migration_id)
        resent.append(migration_id)
    if resent:
        logger.warning("backfill sweep: sent again %s", resent)
    return resent


def backfill(migration_id: int, *, slice_seconds: float | None = None) -> str:
    """One run of a migration's backfill: batches until done (or the slice is over), then the index.

    The continuation is sent once this run's lock is released: sent earlier, another worker could take it
    at once, find the lock held and drop it.
    """
    with migration_lock(migration_id) as held:
        outcome = _run(migration_id, SLICE_SECONDS if slice_seconds is None else slice_seconds) if held else None
    if outcome is None:
        return "running elsewhere"
    if outcome == "continued":
        migration.send_backfill(migration_id)
    return outcome


def _run(migration_id: int, slice_seconds: float) -> str:
    job = SpaceMigration.objects.select_related("collection", "target").filter(pk=migration_id).first()
    if job is None or job.state not in (SpaceMigration.State.BACKFILLING, SpaceMigration.State.INDEXING):
        return job.state if job else "gone"
    SpaceMigration.objects.filter(pk=job.pk).update(updated_at=timezone.now())
    try:
        if job.state == SpaceMigration.State.BACKFILLING:
            if not embed_batches(job, deadline=time.monotonic() + slice_seconds):
                return "continued"
            SpaceMigration.objects.filter(pk=job.pk, state=SpaceMigration.State.BACKFILLING).update(
                state=SpaceMigration.State.INDEXING, backfilled_at=timezone.now(), updated_at=timezone.now()
            )
        build_index(job)
        fill_gaps(job)  # what a dual write missed while the index was built
    except Superseded:
        return "superseded"
    except DATABASE_DOWN:
        raise  # the task retries; the cursor says where it was
    except Exception as error:
        logger.exception("backfill of migration %s failed", job.pk)
        fail(job, f"{error.__class__.__name__}: {error}")
        return SpaceMigration.State.FAILED
    SpaceMigration.objects.filter(pk=job.pk, state=SpaceMigration.State.INDEXING).update(
        state=SpaceMigration.State.READY, updated_at=timezone.now()
    )
    EmbeddingSpace.objects.filter(pk=job.target_id, status=EmbeddingSpace.Status.BUILDING).update(
        status=EmbeddingSpace.Status.READY
    )
    heartbeat.refresh()  # this worker can embed for the target: no need to wait for its next beat
    return SpaceMigration.State.READY


def fail(job: SpaceMigration, reason: str) -> None:
    """The migration ends ``failed`` with its reason; the collection stops writing the target space."""
    with transaction.atomic():
        SpaceMigration.objects.filter(pk=job.pk).update(
            state=SpaceMigration.State.FAILED,
            error=reason[:10_000],
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        Collection.objects.filter(pk=job.collection_id, target_space_id=job.target_id).update(target_space=None)


def _batch_after(collection_id: int, space_id: int, cursor: int, size: int) -> list[tuple]:
    """The next ``size`` chunks of the collection after ``cursor``: (id, heading, text, has a target vector)."""
    with connection.cursor() as db:
        db.execute(
            f"SELECT c.id, c.heading, c.text, EXISTS (SELECT 1 FROM {ChunkVector._meta.db_table} v "
            f"  WHERE v.space_id = {int(space_id)} AND v.chunk_id = c.id) "
            f"FROM {Chunk._meta.db_table} c WHERE c.collection_id = %s AND c.id > %s ORDER BY c.id LIMIT %s",
            [collection_id, cursor, size],
        )
        return db.fetchall()


def _missing(collection_id: int, space_id: int, size: int) -> list[tuple]:
    """Chunks of the collection with no vector in the space yet (the same columns)."""
    with connection.cursor() as db:
        db.execute(
            f"SELECT c.id, c.heading, c.text, false FROM {Chunk._meta.db_table} c WHERE c.collection_id = %s "
            f"AND NOT EXISTS (SELECT 1 FROM {ChunkVector._meta.db_table} v WHERE v.space_id = {int(space_id)} "
            f"AND v.chunk_id = c.id) ORDER BY c.id LIMIT %s",
            [collection_id, size],
        )
        return db.fetchall()


def _embed(space: EmbeddingSpace, rows: list[tuple]) -> dict[int, np.ndarray]:
    """{chunk id: vector} of the rows without a target vector, embedding their heading and text."""
    texts = [embedding_text(heading, text) for _, heading, text, present in rows if not present]
    if not texts:
        return {}
    vectors = embeddings.embed_in_batches(backend_for(space), texts)
    if vectors.shape[1] != space.dimensions:
        raise ValueError(f"the model made {vectors.shape[1]}-dimensional vectors; the space has {space.dimensions}")
    ids = [row[0] for row in rows if not row[3]]
    return dict(zip(ids, vectors, strict=True))


def _store(job: SpaceMigration, vectors: dict[int, np.ndarray], *, cursor: int | None, advance_to: int | None) -> int:
    """Write a batch's vectors and move the cursor, in one transaction, if no other run moved it meanwhile.

    The chunks are read again under a share lock: a chunk deleted since is skipped, one moved to another
    collection is no longer this migration's, and the copies (collection, document, distance) are as now.
    """
    with transaction.atomic():
        locked = SpaceMigration.objects.select_for_update().filter(pk=job.pk).values("state", "cursor").first()
        if locked is None or locked["state"] not in (SpaceMigration.State.BACKFILLING, SpaceMigration.State.INDEXING):
            raise Superseded()
        if cursor is not None and locked["cursor"] != cursor:
            raise Superseded()
        written = 0
        if vectors:
            with connection.cursor() as db:
                db.execute(
                    f"SELECT c.id, c.collection_id, c.document_id, k.distance FROM {Chunk._meta.db_table} c "
                    f"JOIN {Collection._meta.db_table} k ON k.id = c.collection_id "
                    "WHERE c.id = ANY(%s) AND c.collection_id = %s ORDER BY c.id FOR SHARE OF c",
                    [list(vectors), job.collection_id],
                )
                rows = [
                    (chunk_id, collection_id, document_id, distance, vectors[chunk_id])
                    for chunk_id, collection_id, document_id, distance in db.fetchall()
                ]
            written = write_vectors(space=job.target, rows=rows)
        fields: dict[str, object] = {"updated_at": timezone.now(), "chunks_done": F("chunks_done") + written}
        if advance_to is not None:
            fields["cursor"] = advance_to
        SpaceMigration.objects.filter(pk=job.pk).update(**fields)
    return written


class _Rate:
    """Chunks embedded per second over this run's batches (the status page's ETA)."""

    def __init__(self, job: SpaceMigration):
        self.key, self.done, self.seconds = migration.rate_key(job.pk), 0, 0.0

    def add(self, chunks: int, seconds: float) -> None:
        self.done, self.seconds = self.done + chunks, self.seconds + seconds
        if self.done and self.seconds > 0:
            cache.set(self.key, self.done / self.seconds, timeout=24 * 3600)


def embed_batches(job: SpaceMigration, *, deadline: float) -> bool:
    """Batches after the cursor, then the chunks still missing; False when the slice ended first."""
    size = settings.SPACE_BACKFILL_BATCH
    rate = _Rate(job)
    while True:
        cursor = SpaceMigration.objects.values_list("cursor", flat=True).get(pk=job.pk)
        rows = _batch_after(job.collection_id, job.target_id, cursor, size)
        if not rows:
            break
        started = time.perf_counter()
        vectors = _embed(job.target, rows)
        try:
            written = _store(job, vectors, cursor=cursor, advance_to=rows[-1][0])
        except IntegrityError:
            continue  # a dual write gave one of these chunks its vector meanwhile: read the batch again
        rate.add(written, time.perf_counter() - started)
        if time.monotonic() > deadline:
            return False
    fill_gaps(job, rate=rate)
    return True


def fill_gaps(job: SpaceMigration, *, rate: _Rate | None = None) -> None:
    """Embed the collection's chunks still without a vector in the target (committed behind the cursor)."""
    size = settings.SPACE_BACKFILL_BATCH
    for _ in range(10_000):
        rows = _missing(job.collection_id, job.target_id, size)
        if not rows:
            return
        started = time.perf_counter()
        vectors = _embed(job.target, rows)
        try:
            written = _store(job, vectors, cursor=None, advance_to=None)
        except IntegrityError:
            continue
        if rate is not None:
            rate.add(written, time.perf_counter() - started)


def build_index(job: SpaceMigration) -> None:
    """The target's HNSW index for the collection's distance, built CONCURRENTLY, sized, on parallel workers.

    An index left invalid by a build that was killed is dropped first (IF NOT EXISTS would keep it).
    """
    space = job.target
    distance = Collection.objects.values_list("distance", flat=True).get(pk=job.collection_id)
    name = storage.index_name(space, distance)
    with connection.cursor() as db:
        db.execute(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [name],
        )
        invalid = db.fetchone()
        if invalid and invalid[0]:
            db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {connection.ops.quote_name(name)}")
        rows = ChunkVector.objects.filter(space_id=space.pk, distance=distance).count()
        workers = max(0, (os.cpu_count() or 2) - 1)
        db.execute(
            "SELECT set_config('maintenance_work_mem', %s, false), "
            "set_config('max_parallel_maintenance_workers', %s, false)",
            [sized_memory(rows, space.dimensions), str(workers)],
        )
        try:
            storage.create_index(space, distance, concurrently=True)
            db.execute(f"ANALYZE {connection.ops.quote_name(storage.partition_name(space))}")
        finally:
            db.execute("RESET maintenance_work_mem")
            db.execute("RESET max_parallel_maintenance_workers")
