"""The task path on real services: a Celery worker consuming from Redis, PostgreSQL + pgvector."""

import time

import pytest
import redis
from django.conf import settings
from django.core.files.base import ContentFile

from documents import services
from documents.models import Document
from documents.tasks import ingest_document
from tests import documents_factory as factory


def wait_for(predicate, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def finished(document_id):
    document = Document.objects.get(pk=document_id)
    return document if document.is_finished else None


def upload(user, collection, path):
    return services.document_create(
        owner=user, collection=collection, file=ContentFile(path.read_bytes(), name=path.name), filename=path.name
    )


def test_upload_reaches_ready_through_the_worker(celery_worker, user, collection, tmp_path):
    document = upload(user, collection, factory.make_pdf(tmp_path / "a.pdf", ["First page text.", "Second page."]))
    done = wait_for(lambda: finished(document.pk))
    assert done.status == Document.Status.READY, done.error
    assert done.chunks.count() == done.chunk_count == 2
    assert done.started_at and done.finished_at >= done.started_at


def test_bad_files_end_failed_with_reasons_and_the_worker_keeps_going(celery_worker, user, collection, tmp_path):
    bad = upload(user, collection, factory.make_encrypted_pdf(tmp_path / "locked.pdf"))
    scan = upload(user, collection, factory.make_image_only_pdf(tmp_path / "scan.pdf"))
    good = upload(user, collection, factory.make_text(tmp_path / "ok.txt", "The worker survived. " * 20))
    assert "password-protected" in wait_for(lambda: finished(bad.pk)).error
    assert "scanned images" in wait_for(lambda: finished(scan.pk)).error
    assert wait_for(lambda: finished(good.pk)).status == Document.Status.READY


def test_a_task_run_twice_leaves_one_copy_of_the_chunks(celery_worker, celery_app, user, collection, tmp_path):
    path = factory.make_text(tmp_path / "long.txt", "Repeated ingestion must not duplicate. " * 300)
    document = services.document_create(
        owner=user, collection=collection, file=ContentFile(path.read_bytes(), name="long.txt"), enqueue=False
    )
    ingest_document.delay(document.pk)
    ingest_document.delay(document.pk)
    broker = redis.Redis.from_url(settings.REDIS_URL)
    queue = celery_app.conf.task_default_queue
    # With prefetch 1 and late acks the second message leaves the queue only when the first is done.
    wait_for(lambda: broker.llen(queue) == 0)
    done = wait_for(lambda: finished(document.pk))
    assert done.status == Document.Status.READY
    ordinals = list(done.chunks.values_list("ordinal", flat=True))
    assert len(ordinals) == len(set(ordinals)) == done.chunk_count > 1


def test_a_task_for_a_deleted_document_is_harmless(celery_worker, user, collection):
    document = services.document_create(
        owner=user, collection=collection, file=ContentFile(b"bye", name="a.txt"), enqueue=False
    )
    document_id = document.pk
    document.delete()
    assert ingest_document.apply(args=[document_id]).get() is None


@pytest.mark.shared
def test_every_shared_fixture_through_the_api_and_worker(celery_worker, user, fixtures_dir, client):
    from core.models import ApiToken

    _, raw = ApiToken.issue(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    ids = {}
    for path in sorted(fixtures_dir.iterdir()):
        with path.open("rb") as handle:
            response = client.post("/api/v1/documents", {"file": handle, "collection": "Fixtures"}, **auth)
        assert response.status_code == 202, response.content
        ids[path.name] = response.json()["id"]
    for name, document_id in ids.items():
        body = wait_for(
            lambda i=document_id: (r := client.get(f"/api/v1/documents/{i}", **auth).json())["status"]
            in ("ready", "failed") and r,
            timeout=180,
        )
        if body["status"] == "failed":
            assert body["error"], name
        else:
            assert body["chunk_count"] > 0, name
        if name.startswith("good") or name.startswith("odd"):
            assert body["status"] == "ready", (name, body["error"])
    # The worker is still alive: a new document goes through.
    response = client.post(
        "/api/v1/documents", {"file": ContentFile(b"still alive", name="after.txt")}, **auth
    )
    after = response.json()["id"]
    assert wait_for(lambda: finished(after)).status == Document.Status.READY


def test_healthz_counts_the_live_worker(celery_worker, client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["workers"] >= 1


def run_as_the_worker_does(fixup, task):
    """One task's life as a worker process sees it: Celery's Django fixup and the task signals around it."""
    from celery.signals import task_postrun, task_prerun
    from django.db import connection

    fixup.on_task_prerun(sender=task)
    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fixup.on_task_postrun(sender=task)
    task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    return pid


@pytest.mark.django_db(transaction=True)
def test_a_worker_process_keeps_its_database_connection_from_task_to_task(celery_app):
    from celery.fixups.django import DjangoWorkerFixup

    fixup = DjangoWorkerFixup(celery_app)  # as the worker makes it, from the settings
    pids = {run_as_the_worker_does(fixup, ingest_document) for _ in range(5)}
    assert len(pids) == 1  # one PostgreSQL backend served every task: no connection opened per task


@pytest.mark.django_db(transaction=True)
def test_a_connection_older_than_conn_max_age_is_replaced_before_the_next_task(celery_app):
    from celery.fixups.django import DjangoWorkerFixup
    from django.db import connection

    fixup = DjangoWorkerFixup(celery_app)
    first = run_as_the_worker_does(fixup, ingest_document)
    connection.close_at = time.monotonic() - 1  # CONN_MAX_AGE has passed
    assert run_as_the_worker_does(fixup, ingest_document) != first


@pytest.mark.django_db(transaction=True)
def test_an_eager_task_leaves_its_callers_connection_alone(celery_app):
    from celery.signals import task_prerun
    from django.db import connection

    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1
    ingest_document.push_request(is_eager=True)
    try:
        task_prerun.send(sender=ingest_document, task_id="t", task=ingest_document, args=(), kwargs={})
    finally:
        ingest_document.pop_request()
    assert connection.connection is not None  # in its caller's thread, maybe its transaction: never closed
