"""The broker's side of ingestion: send a document's task (never losing it when the broker is down) and
the sweeper, which restarts dead runs and re-sends lost tasks.

Two queues keep a large document from holding back small ones: a document over INGEST_LARGE_BYTES goes
to the large queue (``<default queue>.large``); every other one to the default queue. Workers that
consume the large queue consume the default one too, and at least one worker process consumes the
default queue alone (``make run``, docker-compose.yml): however many large documents wait, a one-page
upload starts as soon as the small documents before it are done (bench/fair_ingestion.py).

The task is sent by name: tasks import this module (the sweep task), never the other way round.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerUnavailable

from documents.models import Document

logger = logging.getLogger(__name__)

INGEST_TASK = "documents.tasks.ingest_document"

QUEUE_UNREACHABLE = "The task queue cannot be reached right now; processing will start as soon as it is back."

# What sending a task raises when the broker is down, after the publish retry policy
# (CELERY_TASK_PUBLISH_RETRY_POLICY) gave up: kombu's OperationalError wraps the connection errors.
BROKER_ERRORS = (BrokerUnavailable, redis.exceptions.RedisError, OSError)


def enqueue_ingestion(document: Document) -> None:
    """Send the ingestion task after the surrounding transaction commits (never before)."""
    transaction.on_commit(lambda: send_ingestion(document))


LARGE_QUEUE_SUFFIX = ".large"


def ingestion_queues() -> tuple[str, str]:
    """The queue of small documents (Celery's default queue, with the sweep) and the queue of large ones."""
    default = current_app.conf.task_default_queue
    return default, default + LARGE_QUEUE_SUFFIX


def queue_for(document: Document) -> str:
    """The queue a document's ingestion goes to: the large one over INGEST_LARGE_BYTES (0: always the default)."""
    small, large = ingestion_queues()
    return large if 0 < settings.INGEST_LARGE_BYTES < document.size else small


def publish_ingestion(document_id: int, *, queue: str | None = None) -> None:
    """Send the ingestion task by name: the services side never imports the task module."""
    app = current_app
    if app.conf.task_always_eager:
        # CELERY_TASK_ALWAYS_EAGER (debugging): run it here, as the task's own .delay() would; send_task
        # ignores that setting. Celery's autodiscovery registers the task in this process.
        app.loader.import_default_modules()
        app.tasks[INGEST_TASK].delay(document_id)
        return
    app.send_task(INGEST_TASK, args=[document_id], queue=queue or app.conf.task_default_queue)


def send_ingestion(document: Document) -> bool:
    """Hand the task to the broker; when it cannot be reached, keep the document queued and say so.

    The upload is already committed: it is never lost. ``queued_at`` empty marks it unsent, and the
    sweeper (``ingestions_sweep``) sends it when the broker answers again. The bounded publish retry
    policy keeps a request from hanging on a dead broker.
    """
    try:
        publish_ingestion(document.pk, queue=queue_for(document))
    except BROKER_ERRORS as error:
        logger.warning("could not queue document %s (%s); the sweeper will send it when the broker is back",
                       document.pk, error)
        Document.objects.filter(pk=document.pk, status=Document.Status.QUEUED).update(
            queued_at=None, error=QUEUE_UNREACHABLE
        )
        document.queued_at, document.error = None, QUEUE_UNREACHABLE
        return False
    return True


def interrupted_reason(attempts: int) -> str:
    return (
        f"Processing was interrupted {attempts} time{'s' if attempts != 1 else ''} without finishing (the server "
        "stopped or ran out of memory), so it was given up. Re-ingest to try again; if it keeps happening, "
        "ask an administrator, who can see the details."
    )


def ingestions_sweep() -> dict[str, int]:
    """Nothing stays queued or processing forever: restart dead runs, re-send lost tasks, give up on the hopeless.

    - processing, but its heartbeat (``Heartbeat``) has stopped for INGEST_STALE_SECONDS: its run died
      (worker killed, out of memory, machine lost). Queued again, or failed with a reason after
      INGEST_MAX_ATTEMPTS runs.
    - queued, never handed to the broker (it was down at upload): sent now.
    - queued long ago while the broker's queue is empty, or while a document queued after it on the same queue
      has started (``passed_in_queue``): its message was lost (Redis restarted without persistence), sent
      again. A task for a document that finished meanwhile does nothing.
    Safe to run concurrently (beat ticks, workers starting): rows are taken with SKIP LOCKED.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.INGEST_STALE_SECONDS)
    rows = Document.objects.select_for_update(skip_locked=True)
    with transaction.atomic():
        stale = list(rows.filter(status=Document.Status.PROCESSING, updated_at__lt=stale_before)
                     .values_list("pk", "attempts"))
        exhausted = [pk for pk, attempts in stale if attempts >= settings.INGEST_MAX_ATTEMPTS]
        for pk, attempts in stale:
            if pk in exhausted:
                Document.objects.filter(pk=pk).update(
                    status=Document.Status.FAILED, error=interrupted_reason(attempts), progress=0.0,
                    finished_at=now, updated_at=now,
                )
        restart = [pk for pk, _ in stale if pk not in exhausted]
        if restart:
            Document.objects.filter(pk__in=restart).update(
                status=Document.Status.QUEUED, progress=0.0, queued_at=now, updated_at=now,
                error="Its worker stopped before finishing; it was queued again and will restart from the beginning.",
            )
        resend = list(rows.filter(status=Document.Status.QUEUED, queued_at__isnull=True).values_list("pk", flat=True))
        waiting = rows.filter(status=Document.Status.QUEUED, queued_at__lt=stale_before)
        if waiting.exists():
            # An empty queue says every waiting message was lost; a busy one, only those the queue has passed:
            # on a site whose queue never empties, a restart of Redis must not leave them waiting for hours.
            lost = waiting if _broker_backlog() == 0 else passed_in_queue(waiting)
            resend += list(lost.values_list("pk", flat=True))
        if resend:
            Document.objects.filter(pk__in=resend).update(queued_at=now, error="")
    sent = [send_ingestion(document) for document in Document.objects.filter(pk__in=restart + resend)]
    counts = {"restarted": len(restart), "failed": len(exhausted), "resent": len(resend), "unsent": sent.count(False)}
    if any(counts.values()):
        logger.warning("ingestion sweep: %s", " ".join(f"{key}={value}" for key, value in counts.items()))
    return counts


# How much later than a waiting document another one must have been queued for its start to prove the waiting
# one's message gone: more than the time between two uploads' queued_at and their messages' publication.
PASSED_MARGIN = timedelta(seconds=5)


def passed_in_queue(waiting: QuerySet[Document]) -> QuerySet[Document]:
    """The ``waiting`` documents whose queue has passed them: a document sent to the same queue at least
    PASSED_MARGIN later has started. Each queue is first in, first out, and a worker process holds no message
    beyond the one it runs (CELERY_WORKER_PREFETCH_MULTIPLIER = 1, acks late), so their message is gone. One
    aggregate per queue: the latest send among the documents that started after it."""
    large = settings.INGEST_LARGE_BYTES
    queues = [Q()] if large <= 0 else [Q(size__lte=large), Q(size__gt=large)]
    passed = Q(pk__in=[])
    for same_queue in queues:
        # A document's start counts for its latest send only (a restart sends it again, later).
        frontier = (Document.objects.filter(same_queue, started_at__gte=F("queued_at"))
                    .aggregate(latest=Max("queued_at"))["latest"])
        if frontier is not None:
            passed |= same_queue & Q(queued_at__lt=frontier - PASSED_MARGIN)
    return waiting.filter(passed)


def _broker_backlog() -> int | None:
    """Messages waiting in the ingestion queues (small and large); None when the broker cannot tell."""
    app = current_app
    try:
        with app.connection_for_write() as conn:
            total = 0
            for name in ingestion_queues():
                try:
                    # ignore: kombu's stubs leave queue_declare off StdChannel, though every transport's Channel has it
                    channel = conn.default_channel
                    declared = channel.queue_declare(queue=name, passive=True)  # type: ignore[attr-defined]
                    total += int(declared.message_count)
                except ChannelError:
                    pass  # the queue does not exist: nothing waits in it
            return total
    except BROKER_ERRORS as error:
        logger.warning("cannot count the ingestion queue (%s)", error)
        return None
