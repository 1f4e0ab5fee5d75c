"""Celery tasks: thin, idempotent, taking ids. The pipeline and the queue decide everything.

Nothing imports this module but Celery (autodiscovery): the queue sends these tasks by name.
"""

import logging

import psycopg
from celery import shared_task
from celery.signals import task_postrun, task_prerun
from django.db import InterfaceError, OperationalError, close_old_connections

from documents import pipeline, queue
from documents.spaces.tasks import backfills_sweep

logger = logging.getLogger(__name__)


@task_prerun.connect
@task_postrun.connect
def check_database_connections(sender=None, **kwargs) -> None:
    """Around every task, what Django does around every request: drop a connection too old or broken.

    A worker process keeps its connection from task to task (CELERY_DB_REUSE_MAX): a new one per task
    was most of a small document's fixed cost (bench/ingest_speed.py). CONN_MAX_AGE bounds its age and
    CONN_HEALTH_CHECKS checks it before the task uses it, so a database restart costs no task a retry.
    Not for a task run eagerly, in its caller's thread and maybe inside its transaction (as Celery's own).
    """
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


@shared_task(
    acks_late=True,
    # A lost database connection is worth retrying; a bad file is not (the service marks it).
    autoretry_for=(OperationalError, InterfaceError, psycopg.OperationalError),
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=5,
)
def ingest_document(document_id: int) -> str | None:
    """Ingest one document if it is still queued or processing; running it twice leaves one copy of its chunks."""
    document = pipeline.document_ingest(document_id=document_id, only_pending=True)
    return document.status if document else None


@shared_task(ignore_result=True)
def sweep() -> dict[str, int] | None:
    """The periodic sweep (Celery beat, and every worker that starts): restart ingestions whose worker died,
    re-send tasks the broker lost, re-send the embedding-space backfills no live worker runs.

    One task for all of it, never one per kind: the ingestion sweep takes an empty queue for the sign that
    messages were lost (documents.queue; on a busy queue, a later document having started), and a second sweep
    sent on the same tick would be sitting in that queue while the first looks.
    """
    try:
        counts = queue.ingestions_sweep()
        counts["backfills"] = len(backfills_sweep())
    except (OperationalError, InterfaceError, psycopg.OperationalError) as error:
        # The database is down: nothing to sweep now; the next beat tick tries again.
        logger.warning("sweep skipped: the database is not reachable (%s)", str(error).splitlines()[0])
        return None
    return counts
