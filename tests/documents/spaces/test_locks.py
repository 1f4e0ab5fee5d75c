"""No step of a migration holds a lock on the chunk table or the vector table for over a second.

A sampler thread reads pg_locks every 50 ms while each step runs (migration start, the backfill through a real
worker, the switch, the rollback, retiring a space): any lock but ACCESS SHARE on ``documents_chunk`` or
``documents_chunkvector`` (or one of its partitions), granted to a transaction that began more than a second
earlier, is recorded. None may be seen but the SHARE UPDATE EXCLUSIVE lock a ``CREATE INDEX CONCURRENTLY`` or
``DETACH PARTITION ... CONCURRENTLY`` holds on the space's own partition (it blocks neither reads nor writes).
A deliberate long lock first shows that the sampler sees one.
"""

from __future__ import annotations

import threading
import time

from django.db import connections

from documents.models import SpaceMigration
from documents.spaces import migration
from tests.documents.spaces.helpers import add_documents, evaluate

LONG_LOCKS = """
    SELECT c.relname, l.mode, a.pid, extract(epoch FROM now() - a.xact_start), left(a.query, 200)
    FROM pg_locks l
    JOIN pg_class c ON c.oid = l.relation
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (c.relname = 'documents_chunk' OR c.relname LIKE 'documents\\_chunkvector%%')
      AND a.pid <> pg_backend_pid()
      AND now() - a.xact_start > interval '1 second'
"""


class LockSampler:
    """Records the long locks (LONG_LOCKS) seen while it runs, from a connection of its own."""

    def __init__(self):
        self.seen: list[tuple] = []
        self.samples = 0
        self._stopped = threading.Event()
        self._sampling = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        # The step starts once the sampler has looked once: a quick step would otherwise be over before the
        # sampler's connection is open (a step with no sample says nothing).
        self._sampling.wait(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        watcher = connections.create_connection("default")
        try:
            with watcher.cursor() as cursor:
                while not self._stopped.is_set():
                    cursor.execute(LONG_LOCKS)
                    self.seen.extend(cursor.fetchall())
                    self.samples += 1
                    self._sampling.set()
                    time.sleep(0.05)
        finally:
            self._sampling.set()
            watcher.close()


def wait_for_state(started: SpaceMigration, state: str, timeout: float = 120) -> SpaceMigration:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started.refresh_from_db()
        if started.state == state:
            return started
        assert started.state not in (SpaceMigration.State.FAILED,), started.error
        time.sleep(0.1)
    raise AssertionError(f"the migration is {started.state}, not {state}, after {timeout:.0f} s")


def test_the_sampler_sees_a_lock_held_over_a_second(transactional_db, collection):
    holder = connections.create_connection("default")
    try:
        with LockSampler() as sampler, holder.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("LOCK TABLE documents_chunk IN SHARE MODE")
            time.sleep(1.6)
            cursor.execute("ROLLBACK")
        assert any(relname == "documents_chunk" and mode == "ShareLock" for relname, mode, *_ in sampler.seen)
    finally:
        holder.close()


def test_no_step_of_a_migration_holds_a_lock_on_the_chunk_tables_over_a_second(
    celery_worker, user, collection, settings
):
    settings.SPACE_BACKFILL_BATCH = 16
    settings.SPACE_RETENTION_DAYS = 0
    add_documents(user, collection, per_topic=8)  # 384 chunks: 24 batches
    source = collection.active_space
    steps: dict[str, LockSampler] = {}
    with LockSampler() as steps["add"]:
        target = migration.space_add(name="hashing-256", backend="hashing", dimensions=256)
    with LockSampler() as steps["migrate and backfill"]:
        started = migration.migration_start(collection=collection, target=target)
        wait_for_state(started, SpaceMigration.State.READY)
    evaluate(started)
    with LockSampler() as steps["switch"]:
        migration.switch(collection=collection)
    with LockSampler() as steps["rollback"]:
        migration.rollback(collection=collection)
    with LockSampler() as steps["retire"]:
        migration.retire(space=target)
    collection.refresh_from_db()
    assert collection.active_space == source and collection.previous_space is None
    for step, sampler in steps.items():
        assert sampler.samples > 0, step
        assert [lock for lock in sampler.seen if not blocks_nobody(lock)] == [], f"{step}: {sampler.seen}"


def blocks_nobody(lock: tuple) -> bool:
    """The index build and the partition's detachment hold SHARE UPDATE EXCLUSIVE on the new (or retired) space's
    partition for as long as they run, by design: it blocks neither reads nor writes (nor the chunk table)."""
    relname, mode, _pid, _seconds, query = lock
    concurrent = "CONCURRENTLY" in query.upper()
    return relname.startswith("documents_chunkvector") and mode == "ShareUpdateExclusiveLock" and concurrent
