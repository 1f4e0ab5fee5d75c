"""Never lose, never leak: cancel, retry, the stale-job sweeper and a broker that is down (services and views).

The same behaviour with real processes really killed (workers, Redis, PostgreSQL) is in tests/system/test_faults.py.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from audit.models import AuditEvent
from core.models import ApiToken
from documents import chunking, embeddings, parsing, pipeline, queue, services, store
from documents.models import Chunk, Collection, Document
from documents.spaces import default_space
from documents.tasks import ingest_document
from tests.conftest import wait_until_a_connection_waits_for_a_lock

pytestmark = pytest.mark.django_db

LONG_TEXT = "\n\n".join(f"Paragraph {i} of the retention policy explains archives and backups. " * 30
                        for i in range(12))


def upload(user, collection, text=LONG_TEXT, name="policy.txt", **kwargs):
    return services.document_create(owner=user, collection=collection, file=ContentFile(text.encode(), name=name),
                                  filename=name, **kwargs)


class Broker:
    """Stands in for sending the task; ``up = False`` fails as kombu does when Redis is down.

    The real broker, really stopped and restarted, is in tests/system/test_faults.py.
    """

    def __init__(self):
        self.up, self.sent = True, []

    def send_task(self, name, args=(), **options):
        if not self.up:
            raise BrokerUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append(args[0])


@pytest.fixture
def broker(monkeypatch, celery_app):
    fake = Broker()
    monkeypatch.setattr(celery_app, "send_task", fake.send_task)  # the queue sends the task by name
    return fake


@pytest.fixture
def sent(broker):
    return broker.sent


@pytest.fixture
def broker_down(broker):
    broker.up = False
    return broker


class CancelDuringBatch:
    """An embedding backend that cancels the document while it embeds batch number ``at`` (1-based)."""

    def __init__(self, document, actor, at: int):
        self.inner = embeddings.HashingBackend(384)
        self.model_name, self.dimensions, self.max_batch = self.inner.model_name, 384, 1000
        self.document, self.actor, self.at, self.batches = document, actor, at, 0

    def embed_documents(self, texts) -> np.ndarray:
        self.batches += 1
        if self.batches == self.at:
            assert services.document_cancel(document=Document.objects.get(pk=self.document.pk), actor=self.actor)
        return self.inner.embed_documents(texts)


# ---------------------------------------------------------------------------------------------------------------
# cancel and retry


def test_cancelling_a_queued_document_records_who_and_a_late_task_does_nothing(user, collection):
    document = upload(user, collection)
    assert services.document_cancel(document=document, actor=user) is True
    document.refresh_from_db()
    assert document.status == Document.Status.CANCELLED and document.error == "Cancelled by alice."
    assert document.is_finished and not document.is_pending
    event = AuditEvent.objects.get(action="cancel")
    assert (event.actor, event.object_id, event.detail) == (user, str(document.pk), {"was": "queued"})
    # The task that was already in the queue is delivered: it leaves the document alone.
    assert ingest_document.apply(args=[document.pk]).get() == Document.Status.CANCELLED
    document.refresh_from_db()
    assert document.status == Document.Status.CANCELLED and document.chunks.count() == 0 and document.attempts == 0


def test_a_finished_document_cannot_be_cancelled(user, collection):
    document = pipeline.document_ingest(document_id=upload(user, collection).pk)
    assert services.document_cancel(document=document, actor=user) is False
    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.chunk_count == document.chunks.count() > 0
    assert not AuditEvent.objects.filter(action="cancel").exists()


def test_a_running_ingestion_stops_at_the_next_batch_without_storing(user, collection, monkeypatch, settings):
    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 0)  # every batch checks
    settings.EMBEDDING_BATCH_SIZE = 2
    document = upload(user, collection)
    backend = CancelDuringBatch(document, user, at=2)
    monkeypatch.setattr(pipeline, "backend_for", lambda space: backend)
    result = pipeline.document_ingest(document_id=document.pk, only_pending=True)
    assert result.status == Document.Status.CANCELLED and result.error == "Cancelled by alice."
    assert result.chunks.count() == 0 and result.chunk_count == 0
    assert backend.batches == 2  # it stopped right after the batch during which it was cancelled


def test_the_store_refuses_under_its_row_lock_a_document_cancelled_meanwhile(user, collection, monkeypatch):
    monkeypatch.setattr(pipeline, "PROGRESS_WRITE_SECONDS", 3600)  # no progress write notices anything
    document = upload(user, collection)
    backend = CancelDuringBatch(document, user, at=1)  # the only batch: the next step is the store
    monkeypatch.setattr(pipeline, "backend_for", lambda space: backend)
    result = pipeline.document_ingest(document_id=document.pk)
    assert result.status == Document.Status.CANCELLED and result.chunks.count() == 0
    assert Chunk.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_cancel_that_arrives_during_the_store_waits_and_then_finds_it_ready(user, collection):
    document = upload(user, collection, enqueue=False)
    drafts = chunking.chunk_sections([parsing.Section(text="Stored while someone presses Cancel. " * 40)])
    answers = []

    def cancel_from_another_connection():
        try:
            answers.append(services.document_cancel(document=Document.objects.get(pk=document.pk), actor=user))
        finally:
            connections.close_all()

    canceller = threading.Thread(target=cancel_from_another_connection)

    def start_the_cancel_and_let_it_wait_for_our_lock():
        canceller.start()
        wait_until_a_connection_waits_for_a_lock("the cancel")

    store.store_chunks(document=document, drafts=drafts, vectors=np.array([[1.0] + [0.0] * 383 for _ in drafts]),
                       on_stored=start_the_cancel_and_let_it_wait_for_our_lock)
    canceller.join(timeout=30)
    assert answers == [False]
    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.chunks.count() == document.chunk_count > 0


def test_reingest_after_cancel_runs_again_from_scratch(user, collection, sent):
    document = upload(user, collection)
    services.document_cancel(document=document, actor=user)
    Document.objects.filter(pk=document.pk).update(attempts=2)
    services.document_reingest(document=Document.objects.get(pk=document.pk), actor=user)
    document.refresh_from_db()
    assert (document.status, document.error, document.attempts) == (Document.Status.QUEUED, "", 0)
    assert ingest_document.apply(args=[document.pk]).get() == Document.Status.READY
    document.refresh_from_db()
    assert document.attempts == 1 and document.chunks.count() == document.chunk_count > 1


# ---------------------------------------------------------------------------------------------------------------
# the cancel endpoints


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def test_cancel_button_on_the_documents_page(signed_in, user, collection):
    queued, ready = upload(user, collection), upload(user, collection, text="Short note.", name="note.txt")
    pipeline.document_ingest(document_id=ready.pk)
    page = signed_in.get("/documents/").content.decode()
    assert page.count('class="inline cancel-form"') == 2  # one per row the user may cancel ...
    assert page.count('class="inline cancel-form" hidden') == 1  # ... shown only while it is pending
    response = signed_in.post(f"/documents/{queued.pk}/cancel/", follow=True)
    assert "Cancelled the processing of “policy”." in response.content.decode()
    page = signed_in.get("/documents/").content.decode()
    assert '<span class="badge cancelled">Cancelled</span>' in page and "Cancelled by alice." in page


def test_cancel_answers_json_to_the_page_script(signed_in, user, collection):
    document = upload(user, collection)
    response = signed_in.post(f"/documents/{document.pk}/cancel/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["document"].items() >= {"status": "cancelled", "status_label": "Cancelled",
                                                   "error": "Cancelled by alice."}.items()
    again = signed_in.post(f"/documents/{document.pk}/cancel/", HTTP_ACCEPT="application/json")
    assert again.status_code == 409 and "already finished (cancelled)" in again.json()["detail"]


def test_a_member_may_read_but_not_cancel(client, user, other_user, collection):
    collection.members.add(other_user)
    document = upload(user, collection)
    client.force_login(other_user)
    response = client.post(f"/documents/{document.pk}/cancel/", HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert Document.objects.get(pk=document.pk).status == Document.Status.QUEUED


def test_cancel_through_the_api(client, user, other_user, collection):
    document = upload(user, collection)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}
    member = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=other_user)[1]}"}
    collection.members.add(other_user)
    assert client.post(f"/api/v1/documents/{document.pk}/cancel", **member).status_code == 403
    response = client.post(f"/api/v1/documents/{document.pk}/cancel", **auth)
    assert response.status_code == 200
    assert response.json().items() >= {"id": document.pk, "status": "cancelled", "error": "Cancelled by alice."}.items()
    again = client.post(f"/api/v1/documents/{document.pk}/cancel", **auth)
    assert again.status_code == 409 and "already finished" in again.json()["detail"]
    assert "/api/v1/documents/{document_id}/cancel" in client.get("/api/v1/openapi.json").json()["paths"]


def test_admin_cancel_action(client, django_user_model, user, collection):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    queued, ready = upload(user, collection), upload(user, collection, text="Short note.", name="note.txt")
    pipeline.document_ingest(document_id=ready.pk)
    client.force_login(admin)
    response = client.post("/admin/documents/document/", {
        "action": "cancel_ingestion", "_selected_action": [queued.pk, ready.pk],
    }, follow=True)
    assert "Cancelled the processing of 1 document(s). 1 had already finished." in response.content.decode()
    assert Document.objects.get(pk=queued.pk).error == "Cancelled by root."
    assert Document.objects.get(pk=ready.pk).status == Document.Status.READY


# ---------------------------------------------------------------------------------------------------------------
# the re-ingest endpoints: retry after a cancel or a failure


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}


def test_retry_through_the_api_after_cancel_queues_again_and_ends_ready(client, user, collection, sent):
    document = upload(user, collection)
    client.post(f"/api/v1/documents/{document.pk}/cancel", **bearer(user))
    response = client.post(f"/api/v1/documents/{document.pk}/reingest", **bearer(user))
    assert response.status_code == 202
    assert response.json().items() >= {"id": document.pk, "status": "queued", "progress": 0.0, "error": ""}.items()
    assert AuditEvent.objects.filter(action="reingest", actor_name="alice", object_id=str(document.pk)).exists()
    document = pipeline.document_ingest(document_id=document.pk)
    assert document.status == Document.Status.READY and document.chunks.count() == document.chunk_count > 1
    assert "/api/v1/documents/{document_id}/reingest" in client.get("/api/v1/openapi.json").json()["paths"]


def test_retry_through_the_api_is_for_the_uploader_and_the_collection_owner(
    client, django_user_model, user, other_user, collection,
):
    member = django_user_model.objects.create_user("bob", "bob@example.com", "correct horse battery")
    stranger = django_user_model.objects.create_user("eve", "eve@example.com", "correct horse battery")
    collection.members.add(other_user, member)
    document = upload(other_user, collection)  # uploaded by a member into Alice's collection
    services.document_cancel(document=document, actor=other_user)
    url = f"/api/v1/documents/{document.pk}/reingest"
    assert client.post(url, **bearer(stranger)).status_code == 404
    refused = client.post(url, **bearer(member))
    assert refused.status_code == 403 and "uploader or the collection's owner" in refused.json()["detail"]
    assert Document.objects.get(pk=document.pk).status == Document.Status.CANCELLED
    assert client.post(url, **bearer(user)).status_code == 202  # the collection's owner
    assert client.post(url, **bearer(other_user)).status_code == 202  # the uploader
    assert Document.objects.get(pk=document.pk).status == Document.Status.QUEUED


def test_the_collection_owner_may_reingest_a_members_upload_on_the_page(client, user, other_user, collection):
    collection.members.add(other_user)
    document = upload(other_user, collection)
    services.document_cancel(document=document, actor=other_user)
    client.force_login(user)
    page = client.get("/documents/").content.decode()
    assert f'action="/documents/{document.pk}/reingest/"' in page
    response = client.post(f"/documents/{document.pk}/reingest/", follow=True)
    assert "“policy” queued again." in response.content.decode()
    assert Document.objects.get(pk=document.pk).status == Document.Status.QUEUED


def test_a_member_may_read_but_not_reingest_on_the_page(client, user, other_user, collection):
    collection.members.add(other_user)
    document = upload(user, collection)
    services.document_cancel(document=document, actor=user)
    client.force_login(other_user)
    page = client.get("/documents/").content.decode()
    assert f'data-document-id="{document.pk}"' in page and f"/documents/{document.pk}/reingest/" not in page
    response = client.post(f"/documents/{document.pk}/reingest/", follow=True)
    assert "Only the uploader or the collection&#x27;s owner can re-ingest" in response.content.decode()
    assert Document.objects.get(pk=document.pk).status == Document.Status.CANCELLED


# ---------------------------------------------------------------------------------------------------------------
# the broker is down when a document is uploaded


@pytest.mark.django_db(transaction=True)  # on_commit runs as in production: when document_create commits
def test_an_upload_while_the_broker_is_down_is_kept_queued_and_says_so(user, collection, broker_down):
    document = upload(user, collection)
    assert document.status == Document.Status.QUEUED and document.queued_at is None
    assert document.error == queue.QUEUE_UNREACHABLE
    stored = Document.objects.get(pk=document.pk)
    assert (stored.status, stored.queued_at, stored.error) == (Document.Status.QUEUED, None, queue.QUEUE_UNREACHABLE)


@pytest.mark.django_db(transaction=True)
def test_with_always_eager_an_upload_is_ingested_in_its_own_process_without_the_broker(user, collection, broker_down,
                                                                                       celery_app):
    # CELERY_TASK_ALWAYS_EAGER (README: debugging only): the task is sent by name, yet runs here as .delay() did.
    celery_app.conf.task_always_eager = True
    try:
        document = upload(user, collection, text="Ingested before the upload answers. " * 20)
    finally:
        celery_app.conf.task_always_eager = False  # as the session's celery_app fixture sets it
    assert Document.objects.get(pk=document.pk).status == Document.Status.READY
    assert broker_down.sent == []


@pytest.mark.django_db(transaction=True)
def test_the_upload_page_and_api_say_when_it_will_start(signed_in, client, user, broker_down):
    response = signed_in.post("/documents/", {"files": [SimpleUploadedFile("a.txt", b"Queue is down.")]},
                              HTTP_ACCEPT="application/json")
    assert response.status_code == 202
    (result,) = response.json()["results"]
    assert result["ok"] and result["document"]["status"] == "queued"
    assert result["document"]["error"] == queue.QUEUE_UNREACHABLE and queue.QUEUE_UNREACHABLE in result["row_html"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}
    body = client.get(f"/api/v1/documents/{result['document']['id']}", **auth).json()
    assert body["status"] == "queued" and "will start as soon as it is back" in body["error"]


# ---------------------------------------------------------------------------------------------------------------
# the sweeper


def age(document, seconds, **fields):
    Document.objects.filter(pk=document.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds), **fields)


def test_the_sweeper_restarts_a_run_whose_progress_stopped(user, collection, settings, sent):
    document = upload(user, collection, enqueue=False)
    live = upload(user, collection, text="Still moving.", name="live.txt", enqueue=False)
    age(document, settings.INGEST_STALE_SECONDS + 1, status=Document.Status.PROCESSING, attempts=1, progress=0.4)
    age(live, settings.INGEST_STALE_SECONDS - 60, status=Document.Status.PROCESSING, attempts=1)
    assert queue.ingestions_sweep() == {"restarted": 1, "failed": 0, "resent": 0, "unsent": 0}
    assert sent == [document.pk]
    document.refresh_from_db()
    assert (document.status, document.progress, document.attempts) == (Document.Status.QUEUED, 0.0, 1)
    assert "queued again" in document.error and document.queued_at is not None
    assert Document.objects.get(pk=live.pk).status == Document.Status.PROCESSING
    # The restarted run is attempt 2, from the beginning; it clears the note.
    assert ingest_document.apply(args=[document.pk]).get() == Document.Status.READY
    document.refresh_from_db()
    assert (document.attempts, document.error) == (2, "") and document.chunks.count() == document.chunk_count
    assert queue.ingestions_sweep() == {"restarted": 0, "failed": 0, "resent": 0, "unsent": 0}


def test_the_sweeper_fails_a_document_whose_runs_keep_dying(user, collection, settings, sent):
    settings.INGEST_MAX_ATTEMPTS = 3
    document = upload(user, collection, enqueue=False)
    age(document, settings.INGEST_STALE_SECONDS + 1, status=Document.Status.PROCESSING, attempts=3)
    assert queue.ingestions_sweep()["failed"] == 1
    assert sent == []
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.finished_at is not None
    assert document.error.startswith("Processing was interrupted 3 times without finishing")


def test_the_sweeper_sends_what_the_broker_never_got(user, collection, broker,
                                                     django_capture_on_commit_callbacks):
    broker.up = False
    with django_capture_on_commit_callbacks(execute=True):
        document = upload(user, collection)
    assert Document.objects.get(pk=document.pk).queued_at is None
    broker.up = True
    sent = broker.sent
    assert queue.ingestions_sweep() == {"restarted": 0, "failed": 0, "resent": 1, "unsent": 0}
    assert sent == [document.pk]
    document.refresh_from_db()
    assert document.queued_at is not None and document.error == "" and document.status == Document.Status.QUEUED


def test_the_sweeper_keeps_a_document_unsent_while_the_broker_is_still_down(user, collection, broker_down,
                                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        document = upload(user, collection)
    assert queue.ingestions_sweep() == {"restarted": 0, "failed": 0, "resent": 1, "unsent": 1}
    document.refresh_from_db()
    assert document.queued_at is None and document.error == queue.QUEUE_UNREACHABLE


@pytest.mark.parametrize(("backlog", "resent"), [(0, 1), (5, 0), (None, 0)])
def test_the_sweeper_resends_a_long_queued_document_only_when_the_queue_is_empty(
    user, collection, settings, sent, monkeypatch, backlog, resent
):
    # An empty queue while the document waits: its message was lost (Redis restarted without persistence).
    # A backlog (or a broker that cannot say): it is still waiting its turn.
    monkeypatch.setattr(queue, "_broker_backlog", lambda: backlog)
    document = upload(user, collection, enqueue=False)
    Document.objects.filter(pk=document.pk).update(
        queued_at=timezone.now() - timedelta(seconds=settings.INGEST_STALE_SECONDS + 1))
    assert queue.ingestions_sweep()["resent"] == resent
    assert sent == [document.pk] * resent


def test_on_a_busy_queue_the_sweeper_resends_the_documents_it_has_passed(user, collection, settings, sent,
                                                                          monkeypatch):
    # Redis restarted empty while uploads kept arriving: the queue never empties, but a document sent after a
    # waiting one has started, and each queue is first in, first out: the waiting one's message is gone.
    monkeypatch.setattr(queue, "_broker_backlog", lambda: 5)
    settings.INGEST_LARGE_BYTES = 10_000
    now, stale = timezone.now(), settings.INGEST_STALE_SECONDS
    lost = upload(user, collection, text="Lost when Redis restarted.", name="lost.txt", enqueue=False)
    close_behind = upload(user, collection, text="Sent just before it started.", name="close.txt", enqueue=False)
    large = upload(user, collection, text="Large. " * 2_000, name="large.txt", enqueue=False)
    later = upload(user, collection, text="Sent later, started.", name="later.txt", enqueue=False)
    Document.objects.filter(pk=lost.pk).update(queued_at=now - timedelta(seconds=stale + 30))
    Document.objects.filter(pk=close_behind.pk).update(queued_at=now - timedelta(seconds=stale + 12))
    Document.objects.filter(pk=large.pk).update(queued_at=now - timedelta(seconds=stale + 30))
    assert queue.queue_for(large) != queue.queue_for(lost)
    # Nothing sent after them has started yet: they are waiting their turn.
    assert queue.ingestions_sweep()["resent"] == 0 and sent == []

    # A small document sent 20 s after "lost" starts: the small queue has passed "lost", not "close_behind" (sent
    # within PASSED_MARGIN before the one that started: their messages may have been published in the other
    # order), nor the large document (another queue).
    Document.objects.filter(pk=later.pk).update(
        status=Document.Status.PROCESSING, queued_at=now - timedelta(seconds=stale + 10),
        started_at=now - timedelta(seconds=stale + 5))
    assert queue.ingestions_sweep()["resent"] == 1 and sent == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == Document.Status.QUEUED and lost.queued_at > now  # sent again: its turn starts anew
    assert queue.ingestions_sweep()["resent"] == 0  # and no longer counts as passed

    # A start before the latest send (a restarted run, queued again) proves nothing.
    Document.objects.filter(pk=later.pk).update(
        status=Document.Status.QUEUED, queued_at=now - timedelta(seconds=stale + 10),
        started_at=now - timedelta(seconds=stale + 20))
    Document.objects.filter(pk=lost.pk).update(queued_at=now - timedelta(seconds=stale + 30))
    assert queue.ingestions_sweep()["resent"] == 0 and sent == [lost.pk]


def test_the_broker_backlog_counts_the_ingestion_queue(celery_app, redis_service):
    import os

    import redis

    name = f"rag-test-backlog-{os.getpid()}"  # not the test worker's queue: it would take these messages
    broker = redis.Redis.from_url(redis_service)
    default_queue, celery_app.conf.task_default_queue = celery_app.conf.task_default_queue, name
    try:
        assert queue._broker_backlog() == 0
        broker.lpush(name, b"{}", b"{}")
        assert queue._broker_backlog() == 2
    finally:
        celery_app.conf.task_default_queue = default_queue
        broker.delete(name)


def test_finished_and_cancelled_documents_are_never_swept(user, collection, settings, sent):
    old = timezone.now() - timedelta(seconds=settings.INGEST_STALE_SECONDS * 10)
    for status in (Document.Status.READY, Document.Status.FAILED, Document.Status.CANCELLED):
        document = upload(user, collection, text=status, name=f"{status}.txt", enqueue=False)
        Document.objects.filter(pk=document.pk).update(status=status, updated_at=old, queued_at=None)
    assert queue.ingestions_sweep() == {"restarted": 0, "failed": 0, "resent": 0, "unsent": 0}
    assert sent == []


def test_a_dead_run_is_found_within_a_minute_or_two_and_a_live_one_has_heartbeats_to_spare(settings):
    # A minute by default (not the longest silent step of a run, which was 12 minutes): the heartbeat
    # makes every live run write several times within the threshold.
    assert settings.INGEST_STALE_SECONDS <= 120
    assert settings.INGEST_STALE_SECONDS >= 5 * settings.INGEST_HEARTBEAT_SECONDS
    assert settings.INGEST_SWEEP_SECONDS <= settings.INGEST_STALE_SECONDS / 4
    assert settings.CELERY_BEAT_SCHEDULE["sweep"]["task"] == "documents.tasks.sweep"


def test_each_beat_tick_sends_one_sweep_so_that_the_sweep_can_find_the_queue_empty(settings):
    # The ingestion sweep takes an empty queue for lost messages: a second task sent on the same tick would be
    # waiting in the queue whenever the sweep looks, and a busy site's lost uploads were never sent again.
    ticking = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
               if entry["schedule"] == settings.INGEST_SWEEP_SECONDS]
    assert ticking == ["documents.tasks.sweep"]


@pytest.mark.django_db(transaction=True)
def test_a_live_run_silent_for_longer_than_the_stale_threshold_keeps_beating_and_is_not_restarted(
    user, collection, settings, sent, openai_server
):
    settings.INGEST_STALE_SECONDS, settings.INGEST_HEARTBEAT_SECONDS = 5, 0.5
    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "openai", "text-embedding-3-small"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_server.url, "test-key"
    settings.EMBEDDING_MAX_RETRIES, settings.EMBEDDING_TIMEOUT_SECONDS = 0, 60
    settings.EMBEDDING_BATCH_SIZE = 1000  # one embedding call: the run's one long silent step
    openai_server.delay(9.0)  # it answers after longer than INGEST_STALE_SECONDS
    # The collection searches (and its documents are embedded in) the space of the model configured now.
    Collection.objects.filter(pk=collection.pk).update(active_space=default_space())
    document = upload(user, collection, enqueue=False)

    def run():
        try:
            pipeline.document_ingest(document_id=document.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not openai_server.requests_to("/embeddings"):  # the run is inside its silent step
            time.sleep(0.05)
        started = Document.objects.get(pk=document.pk).started_at
        while timezone.now() - started < timedelta(seconds=settings.INGEST_STALE_SECONDS + 1):
            time.sleep(0.1)
        assert Document.objects.get(pk=document.pk).status == Document.Status.PROCESSING
        assert queue.ingestions_sweep()["restarted"] == 0  # its heartbeat says it is alive
        assert sent == []
    finally:
        thread.join()
    document.refresh_from_db()
    assert (document.status, document.attempts) == (Document.Status.READY, 1)
    # Once the run is over, its heartbeat stops with it.
    beat = document.updated_at
    time.sleep(3 * settings.INGEST_HEARTBEAT_SECONDS)
    assert Document.objects.get(pk=document.pk).updated_at == beat
