"""documents.spaces.heartbeat: each process records the spaces in use it can embed for; the web's starts with the
ASGI server (lifespan), and a switch counts only the processes seen lately."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from documents.models import Collection, EmbedderHeartbeat, EmbeddingSpace
from documents.spaces import heartbeat, migration, storage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> list[int]:
    """The backfills queued (not sent: these tests run them here, and a worker of this run must not too)."""
    queued: list[int] = []
    monkeypatch.setattr(migration, "send_backfill", queued.append)
    return queued


@pytest.fixture
def unloadable(collection):
    """A space some collection migrates to whose model this process cannot load."""
    space = EmbeddingSpace.objects.create(
        name="missing-model", backend="fastembed", model="x", model_path="/nonexistent", dimensions=384
    )
    storage.create_partition(space)
    Collection.objects.filter(pk=collection.pk).update(target_space=space)
    return space


def test_a_beat_lists_the_spaces_in_use_this_process_can_embed(collection, unloadable):
    unused = migration.space_add(name="unused-64", backend="hashing", dimensions=64)
    row = heartbeat.beat(role="web")
    assert row.process == heartbeat.process_name("web") and row.role == "web"
    assert row.spaces == [collection.active_space_id]  # not the unloadable target, not a space nobody uses
    assert unused.pk not in row.spaces
    assert heartbeat.processes_lacking(unloadable) == [row.process]
    assert heartbeat.processes_lacking(collection.active_space) == []


def test_a_process_gone_quiet_no_longer_counts_and_is_forgotten_later(collection, settings):
    settings.SPACE_HEARTBEAT_STALE_SECONDS = 60
    EmbedderHeartbeat.objects.create(
        process="gone:1:web", role="web", spaces=[], seen_at=timezone.now() - timedelta(seconds=61)
    )
    EmbedderHeartbeat.objects.create(
        process="long-gone:2:web", role="web", spaces=[], seen_at=timezone.now() - timedelta(seconds=601)
    )
    assert heartbeat.processes_lacking(collection.active_space) == []
    assert [row.process for row in heartbeat.live()] == []
    heartbeat.beat(role="worker")
    assert set(EmbedderHeartbeat.objects.values_list("process", flat=True)) == {
        "gone:1:web",
        heartbeat.process_name("worker"),
    }


def test_the_asgi_server_starting_the_web_process_starts_its_heartbeat(collection, settings):
    settings.SPACE_HEARTBEAT_SECONDS = 0.2
    sent: list[dict] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # never reached: the lifespan is answered by the middleware
        raise AssertionError("the lifespan scope reached the application")

    asyncio.run(heartbeat.Lifespan(app)({"type": "lifespan"}, receive, send))
    assert [message["type"] for message in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    beating = heartbeat.start(role="web")  # the same thread: one per process
    try:
        seen = []
        for _ in range(100):
            row = EmbedderHeartbeat.objects.filter(process=heartbeat.process_name("web")).first()
            if row is not None and (not seen or row.seen_at > seen[-1]):
                seen.append(row.seen_at)
            if len(seen) >= 2:
                break
            time.sleep(0.05)
        assert len(seen) >= 2, "the heartbeat did not beat again"
        assert row.spaces == [collection.active_space_id]
    finally:
        beating.stop()
    assert not beating.thread.is_alive()


def test_this_process_answers_for_itself_not_by_a_beat_older_than_the_target(collection):
    row = heartbeat.beat(role="worker")
    target = migration.space_add(name="hashing-128", backend="hashing", dimensions=128)
    migration.migration_start(collection=collection, target=target)
    row.refresh_from_db()
    assert target.pk not in row.spaces  # its beat predates the target
    assert heartbeat.processes_lacking(target) == []  # but it can embed for it now
