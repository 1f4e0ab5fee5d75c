"""documents.spaces.migration and the backfill run in this process: add, migrate, backfill, gate, switch, retire.

The backfill runs here (``tasks.backfill``, the task's body) so that its steps can be stopped and resumed at
will; test_backfill_worker.py runs it through a real Celery worker, tests/system/test_space_backfill_killed.py
kills one mid-way.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from django.core.cache import cache
from django.db import connections
from django.utils import timezone

from audit.models import AuditEvent
from documents.chunking import embedding_text
from documents.models import Chunk, ChunkVector, Collection, EmbedderHeartbeat, EmbeddingSpace, SpaceMigration
from documents.spaces import backend_for, migration, storage, tasks
from documents.spaces.migration import SpaceRefused, SwitchRefused
from documents.spaces.vectors import search_space
from tests.documents.spaces.helpers import add_documents, chunk_ids, evaluate, index_state, vectors_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> list[int]:
    """The backfills queued (not sent: these tests run them here, and a worker of this run must not too)."""
    queued: list[int] = []
    monkeypatch.setattr(migration, "send_backfill", queued.append)
    return queued


@pytest.fixture
def small_batches(settings):
    settings.SPACE_BACKFILL_BATCH = 4


@pytest.fixture
def hashing_256(user):
    return migration.space_add(name="hashing-256", backend="hashing", dimensions=256, user=user)


@pytest.fixture
def filled(user, collection):
    add_documents(user, collection)
    return collection


def backfilled(collection, target, user=None) -> SpaceMigration:
    started = migration.migration_start(collection=collection, target=target, user=user)
    assert tasks.backfill(started.pk) == SpaceMigration.State.READY
    started.refresh_from_db()
    return started


# ---------------------------------------------------------------------------------------------------------------
# space_add


def test_a_space_is_added_building_with_an_empty_partition_and_no_index(hashing_256, user):
    assert (hashing_256.backend, hashing_256.model, hashing_256.dimensions) == ("hashing", "hashing-256", 256)
    assert hashing_256.status == EmbeddingSpace.Status.BUILDING
    assert storage.partition_exists(hashing_256) and index_state(hashing_256) is None
    event = AuditEvent.objects.get(action=AuditEvent.Action.SPACE_ADDED)
    assert event.actor == user and event.object_repr == "hashing-256"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Bad Name!", "backend": "hashing"}, "not a valid space name"),
        ({"name": "x", "backend": "word2vec"}, "Unknown backend 'word2vec'"),
        ({"name": "x", "backend": "hashing", "dimensions": 0}, "positive"),
        ({"name": "x", "backend": "local", "dimensions": 256}, "makes 384-dimensional vectors, not 256"),
        ({"name": "x", "backend": "fastembed", "model_path": "/nonexistent/model"}, "cannot be loaded here"),
    ],
)
def test_a_space_that_cannot_work_is_refused_with_the_reason(db, fields, message):
    with pytest.raises(SpaceRefused, match=message):
        migration.space_add(**fields)
    assert not EmbeddingSpace.objects.filter(name=fields["name"]).exists()


def test_a_space_name_is_taken_once(hashing_256):
    with pytest.raises(SpaceRefused, match="already exists"):
        migration.space_add(name="hashing-256", backend="hashing", dimensions=256)


# ---------------------------------------------------------------------------------------------------------------
# migration_start and the backfill


def test_migration_start_returns_at_once_with_the_target_set_and_refuses_a_second(filled, hashing_256, user, sent):
    started = migration.migration_start(collection=filled, target=hashing_256, user=user)
    assert sent == [started.pk]  # queued once committed
    filled.refresh_from_db()
    assert filled.target_space == hashing_256 and filled.active_space.name == "hashing-384"
    assert started.state == SpaceMigration.State.BACKFILLING and started.cursor == 0
    assert started.chunks_total == Chunk.objects.filter(collection=filled).count() > 0
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SPACE_MIGRATE, object_id=str(filled.pk)).exists()
    with pytest.raises(SpaceRefused, match="already migrating to hashing-256"):
        migration.migration_start(collection=filled, target=hashing_256)
    with pytest.raises(SpaceRefused, match="already searches"):
        migration.migration_start(collection=filled, target=filled.active_space)


def test_the_backfill_embeds_the_stored_heading_and_text_with_the_targets_model_then_builds_its_index(
    filled, hashing_256, small_batches
):
    done = backfilled(filled, hashing_256)
    ids = chunk_ids(filled)
    stored = vectors_of(hashing_256, filled)
    assert sorted(stored) == ids and len(ids) > 3 * 4  # several batches
    assert done.cursor == ids[-1] and done.chunks_done == len(ids) and done.backfilled_at is not None
    chunks = {chunk.pk: chunk for chunk in Chunk.objects.filter(collection=filled)}
    assert any(chunk.heading for chunk in chunks.values())
    texts = [embedding_text(chunks[i].heading, chunks[i].text) for i in ids]
    expected = backend_for(hashing_256).embed_documents(texts)
    np.testing.assert_allclose(np.stack([stored[i] for i in ids]), expected, atol=1e-6)
    assert index_state(hashing_256) is True  # built (concurrently), valid
    hashing_256.refresh_from_db()
    assert hashing_256.status == EmbeddingSpace.Status.READY
    # The collection still searches its active space until the switch.
    filled.refresh_from_db()
    assert filled.active_space.name == "hashing-384" and filled.target_space == hashing_256


def test_a_run_cut_short_resumes_from_its_cursor_with_no_gap_and_no_duplicate(filled, hashing_256, small_batches, sent):
    started = migration.migration_start(collection=filled, target=hashing_256)
    ids = chunk_ids(filled)
    assert tasks.backfill(started.pk, slice_seconds=0) == "continued"  # one batch, then its continuation
    assert sent == [started.pk, started.pk]
    started.refresh_from_db()
    assert started.cursor == ids[3] and started.chunks_done == 4
    assert sorted(vectors_of(hashing_256, filled)) == ids[:4]
    status = migration.migration_status(filled)
    assert (status["state"], status["done"], status["total"]) == ("backfilling", 4, len(ids))
    rate = cache.get(migration.rate_key(started.pk))  # chunks/s the run measured over its batch
    assert rate > 0 and status["eta_seconds"] == pytest.approx((len(ids) - 4) / rate, abs=0.06)
    assert tasks.backfill(started.pk) == SpaceMigration.State.READY
    started.refresh_from_db()
    assert sorted(vectors_of(hashing_256, filled)) == ids and started.chunks_done == len(ids)
    assert started.cursor == ids[-1]
    assert migration.migration_status(filled)["eta_seconds"] == 0.0


def test_a_second_run_of_a_running_backfill_does_nothing(filled, hashing_256, sent):
    started = migration.migration_start(collection=filled, target=hashing_256)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [tasks.LOCK_CLASS, started.pk])
            assert tasks.lock_held(started.pk)
            assert tasks.backfill(started.pk) == "running elsewhere"
            # The sweep leaves a migration whose run is alive alone, however long it has been quiet.
            SpaceMigration.objects.filter(pk=started.pk).update(updated_at=timezone.now() - timedelta(hours=1))
            assert tasks.backfills_sweep() == []
    finally:
        other.close()  # the lock dies with its connection, as with a killed worker
    for _ in range(100):  # the server ends the closed session's backend a moment later
        if not tasks.lock_held(started.pk):
            break
        time.sleep(0.05)
    assert not tasks.lock_held(started.pk)
    assert tasks.backfills_sweep() == [started.pk] and sent == [started.pk, started.pk]
    assert ChunkVector.objects.filter(space_id=hashing_256.pk).count() == 0


def test_a_batch_whose_cursor_moved_meanwhile_is_dropped_not_written_twice(filled, hashing_256, small_batches):
    started = migration.migration_start(collection=filled, target=hashing_256)
    ids = chunk_ids(filled)
    rows = tasks._batch_after(filled.pk, hashing_256.pk, 0, 4)
    vectors = tasks._embed(hashing_256, rows)
    job = SpaceMigration.objects.select_related("target").get(pk=started.pk)
    tasks._store(job, vectors, cursor=0, advance_to=rows[-1][0])  # the other run's batch
    with pytest.raises(tasks.Superseded):
        tasks._store(job, vectors, cursor=0, advance_to=rows[-1][0])  # this run's, from the same cursor
    assert sorted(vectors_of(hashing_256, filled)) == ids[:4]


def test_a_backfill_whose_model_cannot_load_fails_with_its_reason_and_stops_the_dual_writes(filled, hashing_256):
    broken = EmbeddingSpace.objects.create(
        name="broken", backend="fastembed", model="x", model_path="/nonexistent", dimensions=384
    )
    storage.create_partition(broken)
    started = migration.migration_start(collection=filled, target=broken)
    assert tasks.backfill(started.pk) == SpaceMigration.State.FAILED
    started.refresh_from_db()
    filled.refresh_from_db()
    assert started.state == SpaceMigration.State.FAILED and started.error and started.finished_at
    assert filled.target_space is None
    assert migration.migration_start(collection=filled, target=hashing_256).state == "backfilling"  # may start again


# ---------------------------------------------------------------------------------------------------------------
# the gate


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (None, "has not been evaluated"),
        ({"evaluated_at": "2000-01-01T00:00:00+00:00"}, "older than the end of the backfill"),
        ({"coverage": 0.5}, "saw only 50.0% of the chunks"),
        ({"recall_at_10": 0.5}, "recall@10 0.500, below the gate's 0.9"),
        ({"recall_at_10": None}, "recall@10 not measured"),
        ({"labelled": True, "ndcg_at_10_active": 0.60, "ndcg_at_10_target": 0.50}, "nDCG@10 0.500 against 0.600"),
        ({"hnsw_recall_mean": 0.7}, "HNSW index misses too many exact neighbours: recall 0.700"),
        ({}, None),
        ({"labelled": True, "ndcg_at_10_active": 0.60, "ndcg_at_10_target": 0.59}, None),
    ],
)
def test_the_gate_refuses_a_target_unevaluated_incomplete_or_worse(filled, hashing_256, changes, reason):
    done = backfilled(filled, hashing_256)
    if changes is not None:
        evaluate(done, **changes)
    assert (migration.gate_reason(done) is None) if reason is None else reason in migration.gate_reason(done)


# ---------------------------------------------------------------------------------------------------------------
# switch


def test_the_switch_is_refused_before_the_backfill_is_ready(filled, hashing_256):
    started = migration.migration_start(collection=filled, target=hashing_256)
    evaluate(started)
    with pytest.raises(SwitchRefused, match="not ready: backfilling, 0 of"):
        migration.switch(collection=filled, force=True)


def test_the_switch_is_refused_by_the_gate_and_forced_past_it_with_a_record(filled, hashing_256, user):
    done = backfilled(filled, hashing_256)
    evaluate(done, recall_at_10=0.4)
    with pytest.raises(SwitchRefused, match=r"recall@10 0.400.*--force switches anyway") as refused:
        migration.switch(collection=filled, user=user)
    assert "recall@10" in refused.value.reason
    filled.refresh_from_db()
    assert filled.active_space.name == "hashing-384"
    switched = migration.switch(collection=filled, force=True, user=user)
    assert switched.forced and switched.state == SpaceMigration.State.SWITCHED
    event = AuditEvent.objects.get(action=AuditEvent.Action.SPACE_SWITCH_FORCED)
    assert event.actor == user and "recall@10 0.400" in event.detail["gate"]


def test_a_forced_switch_past_a_passing_gate_is_not_marked_forced(filled, hashing_256):
    evaluate(backfilled(filled, hashing_256))
    assert not migration.switch(collection=filled, force=True).forced
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SPACE_SWITCH).count() == 1


def test_the_switch_flips_the_spaces_and_keeps_the_old_one(filled, hashing_256):
    source = filled.active_space
    evaluate(backfilled(filled, hashing_256))
    switched = migration.switch(collection=filled)
    filled.refresh_from_db()
    assert (filled.active_space, filled.previous_space, filled.target_space) == (hashing_256, source, None)
    assert switched.switched_at and not switched.forced
    hashing_256.refresh_from_db()
    assert hashing_256.status == EmbeddingSpace.Status.ACTIVE and hashing_256.activated_at
    status = migration.migration_status(filled)
    assert (status["active"], status["previous"], status["target"], status["state"]) == (
        "hashing-256",
        "hashing-384",
        None,
        "switched",
    )


def test_a_chunk_stored_after_the_backfill_without_its_target_vector_sends_the_backfill_again(
    filled, hashing_256, sent
):
    done = evaluate(backfilled(filled, hashing_256))
    missing = chunk_ids(filled)[5]
    ChunkVector.objects.filter(space_id=hashing_256.pk, chunk_id=missing).delete()  # what a race would leave
    with pytest.raises(SwitchRefused, match="1 of .* chunks have no vector in hashing-256 yet: the backfill was"):
        migration.switch(collection=filled)
    done.refresh_from_db()
    assert done.state == SpaceMigration.State.BACKFILLING and sent == [done.pk, done.pk]
    assert tasks.backfill(done.pk) == SpaceMigration.State.READY
    assert missing in vectors_of(hashing_256, filled)
    migration.switch(collection=filled, force=True)


def test_the_switch_waits_for_every_live_process_to_embed_the_target(filled, hashing_256, settings):
    evaluate(backfilled(filled, hashing_256))
    now = timezone.now()
    EmbedderHeartbeat.objects.create(process="web-1:7:web", role="web", spaces=[filled.active_space_id], seen_at=now)
    EmbedderHeartbeat.objects.create(
        process="worker-1:8:worker", role="worker", spaces=[filled.active_space_id, hashing_256.pk], seen_at=now
    )
    # A process gone quiet is dead, not lagging.
    EmbedderHeartbeat.objects.create(process="old:9:web", role="web", spaces=[], seen_at=now - timedelta(hours=1))
    with pytest.raises(SwitchRefused, match="cannot embed queries for hashing-256 yet: web-1:7:web\\."):
        migration.switch(collection=filled, force=True)  # force overrides the gate, not this
    EmbedderHeartbeat.objects.filter(process="web-1:7:web").update(spaces=[filled.active_space_id, hashing_256.pk])
    migration.switch(collection=filled)


# ---------------------------------------------------------------------------------------------------------------
# retire


def test_a_space_in_use_or_kept_for_rollback_is_not_retired_until_its_retention_ends(filled, hashing_256, settings):
    source = filled.active_space
    with pytest.raises(SpaceRefused, match="in use by 1 collection"):
        migration.retire(space=source)
    evaluate(backfilled(filled, hashing_256))
    with pytest.raises(SpaceRefused, match="in use by 1 collection"):
        migration.retire(space=hashing_256)  # the target of an open migration
    migration.switch(collection=filled)
    settings.SPACE_RETENTION_DAYS = 7
    with pytest.raises(SpaceRefused, match=r"kept for a rollback of Handbook until .* \(SPACE_RETENTION_DAYS=7\)"):
        migration.retire(space=source)
    settings.SPACE_RETENTION_DAYS = 0
    retired = migration.retire(space=source)
    assert retired.status == EmbeddingSpace.Status.RETIRED and retired.retired_at
    assert not storage.partition_exists(source)
    filled.refresh_from_db()
    assert filled.previous_space is None and filled.active_space == hashing_256
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SPACE_RETIRE, object_id=str(source.pk)).exists()
    with pytest.raises(SpaceRefused, match="already retired"):
        migration.retire(space=source)
    with pytest.raises(SpaceRefused, match="retired"):
        migration.migration_start(collection=filled, target=source)


def test_a_new_collection_is_unaffected_by_another_collections_migration(filled, hashing_256, user):
    evaluate(backfilled(filled, hashing_256))
    migration.switch(collection=filled)
    assert Collection.objects.create(owner=user, name="Fresh").active_space.name == "hashing-384"


# ---------------------------------------------------------------------------------------------------------------
# rollback


QUERIES = ["magma eruption crater", "sourdough starter loaf", "rook castling endgame", "ice moraine meltwater"]


def top_k(collection, k: int = 10) -> list[list[int]]:
    """Each query's top ``k`` chunk ids in the collection's active space (HNSW, as searches use it)."""
    collection.refresh_from_db()
    space = collection.active_space
    backend = backend_for(space)
    return [
        [
            chunk_id
            for chunk_id, _ in search_space(
                space=space,
                distance=collection.distance,
                vector=backend.embed_query(query),
                k=k,
                collection_ids=[collection.pk],
            )
        ]
        for query in QUERIES
    ]


def test_rollback_returns_the_same_top_k_as_before_the_migration(filled, hashing_256, user):
    before = top_k(filled)
    assert all(len(ids) == 10 for ids in before)
    evaluate(backfilled(filled, hashing_256))
    migration.switch(collection=filled)
    assert top_k(filled) != before  # another model's neighbours
    rolled = migration.rollback(collection=filled, user=user)
    assert (rolled.active_space.name, rolled.previous_space) == ("hashing-384", hashing_256)
    assert top_k(filled) == before
    assert SpaceMigration.objects.get(target=hashing_256).state == SpaceMigration.State.ROLLED_BACK
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SPACE_ROLLBACK, actor=user).count() == 1
    with pytest.raises(SwitchRefused, match="no migration to switch to"):
        migration.switch(collection=filled)


def test_rollback_is_refused_when_chunks_stored_since_the_switch_lack_the_old_space_then_migrating_back_fills_only_them(
    filled, hashing_256, user
):
    source = filled.active_space
    evaluate(backfilled(filled, hashing_256))
    migration.switch(collection=filled)
    filled.refresh_from_db()
    add_documents(user, filled, parts=2)  # stored in the active space only (no migration is open)
    added = len(chunk_ids(filled)) - len(vectors_of(source, filled))
    assert added > 0
    with pytest.raises(SwitchRefused, match=f"{added} chunks stored since the switch have no vector in hashing-384"):
        migration.rollback(collection=filled)
    back = migration.migration_start(collection=filled, target=source)
    already = back.chunks_done
    assert already == len(chunk_ids(filled)) - added
    assert tasks.backfill(back.pk) == SpaceMigration.State.READY
    back.refresh_from_db()
    assert back.chunks_done == already + added  # only the new chunks were embedded
    evaluate(back)
    migration.switch(collection=filled)
    filled.refresh_from_db()
    assert (filled.active_space, filled.previous_space) == (source, hashing_256)


def test_rollback_without_a_previous_space_or_during_a_migration_is_refused(filled, hashing_256):
    with pytest.raises(SwitchRefused, match="no previous space"):
        migration.rollback(collection=filled)
    evaluate(backfilled(filled, hashing_256))
    migration.switch(collection=filled)
    third = migration.space_add(name="hashing-128", backend="hashing", dimensions=128)
    migration.migration_start(collection=filled, target=third)
    with pytest.raises(SwitchRefused, match="is migrating to another space"):
        migration.rollback(collection=filled)
