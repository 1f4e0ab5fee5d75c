"""Fair ingestion: large documents go to a queue of their own, which `make run` and compose workers consume,
with one worker process kept for small documents (bench/fair_ingestion.py measures the effect)."""

from pathlib import Path

import pytest
import redis
from django.core.files.base import ContentFile

from documents import queue, services
from documents.models import Document
from ragsite import launcher
from tests.documents.test_tasks import finished, wait_for


@pytest.fixture
def broker(celery_app, settings):
    """Queues of this test's own: the test worker (if one runs) consumes others and would take these messages."""
    import os

    client = redis.Redis.from_url(settings.REDIS_URL)
    default_queue, celery_app.conf.task_default_queue = celery_app.conf.task_default_queue, f"rag-fair-{os.getpid()}"
    names = queue.ingestion_queues()
    try:
        yield client
    finally:
        celery_app.conf.task_default_queue = default_queue
        client.delete(*names)


def upload(user, collection, size: int, name: str) -> Document:
    body = (f"{name} " * (size // (len(name) + 1) + 1)).encode()[:size]
    return services.document_create(owner=user, collection=collection, file=ContentFile(body, name=name))


@pytest.mark.django_db(transaction=True)
def test_a_file_over_the_threshold_is_sent_to_the_large_queue_and_a_small_one_to_the_default(
    user, collection, settings, broker, celery_app
):
    settings.INGEST_LARGE_BYTES = 4096
    small, large = queue.ingestion_queues()
    assert (small, large) == (celery_app.conf.task_default_queue, celery_app.conf.task_default_queue + ".large")

    upload(user, collection, 4096, "note.txt")
    upload(user, collection, 4097, "novel.txt")

    assert (broker.llen(small), broker.llen(large)) == (1, 1)
    assert queue._broker_backlog() == 2  # the sweeper sees both: a lost message is told from a waiting one


@pytest.mark.django_db(transaction=True)
def test_a_threshold_of_zero_keeps_one_queue(user, collection, settings, broker):
    settings.INGEST_LARGE_BYTES = 0
    small, large = queue.ingestion_queues()
    upload(user, collection, 100_000, "novel.txt")
    assert (broker.llen(small), broker.llen(large)) == (1, 0)


def test_the_default_threshold_splits_a_novel_from_a_one_page_pdf(settings):
    assert 200_000 < settings.INGEST_LARGE_BYTES < 3_000_000


def test_the_worker_consumes_the_large_queue_too(celery_worker, user, collection, settings):
    settings.INGEST_LARGE_BYTES = 1000
    document = upload(user, collection, 5000, "long.txt")
    assert wait_for(lambda: finished(document.pk)).status == Document.Status.READY


@pytest.mark.parametrize("processes", [2, 4])
def test_make_run_consumes_both_queues_and_keeps_one_process_for_small_documents(tmp_path: Path, processes):
    workers = launcher.worker_commands("python", processes, tmp_path)

    def queues(command: list[str]) -> set[str]:
        return set(command[command.index("-Q") + 1].split(","))

    consumed = [queues(command) for _, command in workers]
    assert set().union(*consumed) == {launcher.DEFAULT_QUEUE, launcher.DEFAULT_QUEUE + queue.LARGE_QUEUE_SUFFIX}
    assert {launcher.DEFAULT_QUEUE} in consumed  # nothing large ever reaches this one
    assert sum(int(command[command.index("--concurrency") + 1]) for _, command in workers) == processes
    assert sum("-B" in command for _, command in workers) == 1  # one beat
    names = [command[command.index("-n") + 1] for _, command in workers]
    assert len(set(names)) == len(names)


def test_make_run_with_one_process_has_it_take_every_document(tmp_path: Path):
    [(_, command)] = launcher.worker_commands("python", 1, tmp_path)
    assert command[command.index("-Q") + 1] == f"{launcher.DEFAULT_QUEUE}.large,{launcher.DEFAULT_QUEUE}"
    assert command[command.index("--concurrency") + 1] == "1" and "-B" in command


def test_make_runs_default_queue_is_the_one_the_app_sends_small_documents_to(settings):
    from celery.app.defaults import DEFAULTS

    assert not hasattr(settings, "CELERY_TASK_DEFAULT_QUEUE")  # the app keeps Celery's default queue
    assert launcher.DEFAULT_QUEUE == DEFAULTS["task_default_queue"]
