"""A Celery worker SIGKILLed in the middle of a backfill: a new worker resumes it from the cursor, with no gap
and no duplicate.

Real processes, as tests/system/test_faults.py runs them: `celery -A ragsite worker -B` subprocesses on this
run's test database and a Redis of their own. The target space embeds through the loopback OpenAI-protocol
server, slowed down so that the backfill is caught midway. Nothing tells the new worker about the killed run:
its beat's sweep (documents.tasks.sweep, the backfills part) finds a backfilling migration whose lock died with
the killed worker's connection and sends it again (the broker would redeliver the unacknowledged message only
after CELERY_VISIBILITY_TIMEOUT, an hour here).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from celery import Celery

from documents.chunking import embedding_text
from documents.models import Chunk, EmbedderHeartbeat, SpaceMigration
from documents.spaces import migration
from documents.spaces.migration import BACKFILL_TASK
from tests.documents.spaces.helpers import add_documents, chunk_ids, vectors_of
from tests.system.test_faults import (  # noqa: F401  (own_redis: the fixture)
    own_redis,
    start_worker,
    stop,
    this_runs_database_url,
    wait_for,
)


def worker_env(redis_url: str, server) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": this_runs_database_url(),
        "REDIS_URL": redis_url,
        "EMBEDDING_BACKEND": "hashing",  # the collection's active space; the target embeds through OpenAI
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "test-key",
        "SPACE_BACKFILL_BATCH": "4",
        "EMBEDDING_TIMEOUT_SECONDS": "10",
        "CELERY_VISIBILITY_TIMEOUT": "3600",
        "INGEST_STALE_SECONDS": "6",  # the sweep re-sends a backfill quiet this long (and runs every 1.5 s)
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


def send(redis_url: str, migration_id: int) -> None:
    client = Celery("backfill-killed", broker=redis_url, set_as_current=False)
    try:
        client.send_task(BACKFILL_TASK, args=[migration_id], queue="celery.large")
    finally:
        client.close()


def no_gap_up_to_the_cursor(job: SpaceMigration, collection, target) -> list[int]:
    """The target's chunk ids: exactly the collection's chunks up to the cursor, counted once."""
    job.refresh_from_db()
    stored = sorted(vectors_of(target, collection))
    assert stored == [i for i in chunk_ids(collection) if i <= job.cursor], (job.cursor, stored[-3:])
    assert job.chunks_done == len(stored)
    return stored


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_backfill_is_resumed_by_another_from_the_cursor(
    own_redis,  # noqa: F811  (the fixture imported above)
    openai_server,
    settings,
    user,
    collection,
    tmp_path,
    monkeypatch,
):
    redis_url = f"{own_redis[0]}/4"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_server.url, "test-key"
    add_documents(user, collection, per_topic=4)  # 192 chunks: 48 batches of 4
    target = migration.space_add(name="openai-256", backend="openai", model="text-embedding-3-small", dimensions=256)
    openai_server.delay(0.5, times=10_000)  # each batch's embedding call: the backfill lasts about 24 s
    # The test sends the task to the doomed worker's broker itself: the service's own send would go to this test
    # process's queue, where an in-process worker left by an earlier test would run the backfill beside it.
    monkeypatch.setattr(migration, "send_backfill", lambda migration_id: True)
    job = migration.migration_start(collection=collection, target=target)
    env = worker_env(redis_url, openai_server)
    first = start_worker(
        "doomed",
        env,
        tmp_path / "worker-1.log",
        "-Q",
        "celery,celery.large",
        "-B",
        "--schedule",
        str(tmp_path / "beat-1"),
    )
    second = None
    try:
        send(redis_url, job.pk)
        total = len(chunk_ids(collection))
        wait_for(
            lambda: SpaceMigration.objects.get(pk=job.pk).chunks_done >= total // 8,
            timeout=90,
            what="the first worker to be well into the backfill",
        )
        os.killpg(first.pid, signal.SIGKILL)  # the worker, its pool process and its beat: no goodbye
        first.wait()
        killed = SpaceMigration.objects.get(pk=job.pk)
        assert killed.state == SpaceMigration.State.BACKFILLING
        stored = no_gap_up_to_the_cursor(killed, collection, target)
        assert total // 8 <= len(stored) < total

        second = start_worker(
            "replacement",
            env,
            tmp_path / "worker-2.log",
            "-Q",
            "celery,celery.large",
            "-B",
            "--schedule",
            str(tmp_path / "beat-2"),
        )
        wait_for(
            lambda: SpaceMigration.objects.get(pk=job.pk).state == SpaceMigration.State.READY,
            timeout=120,
            what="the replacement worker to finish the backfill",
        )
        done = SpaceMigration.objects.get(pk=job.pk)
        stored = no_gap_up_to_the_cursor(done, collection, target)
        assert stored == chunk_ids(collection) and done.cursor == stored[-1]
        assert "backfill sweep: sent again" in (tmp_path / "worker-2.log").read_text()
        # The vectors are the target model's, of each chunk's heading and text.
        vectors = vectors_of(target, collection)
        for chunk in Chunk.objects.filter(collection=collection).order_by("id")[:: total // 8]:
            expected = openai_server.embedding_for(embedding_text(chunk.heading, chunk.text), 256)
            np.testing.assert_allclose(vectors[chunk.pk], expected, atol=1e-5)
        # The workers' pool processes said which spaces they can embed for: the active one and the target.
        beats = EmbedderHeartbeat.objects.filter(role="worker").exclude(process__contains=f":{os.getpid()}:")
        assert any(target.pk in row.spaces and collection.active_space_id in row.spaces for row in beats)
    finally:
        stop(first)
        if second is not None:
            stop(second)
