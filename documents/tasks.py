"""Celery tasks: thin, idempotent, taking ids. The pipeline and the queue decide everything.

Nothing imports this module but Celery (autodiscovery): the queue sends these tasks by name.
"""

import logging

import psycopg
from celery import shared_task
from django.db import InterfaceError, OperationalError

from documents import pipeline, queue

logger = logging.getLogger(__name__)


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
def sweep_stale_ingestions() -> dict[str, int] | None:
    """Restart ingestions whose worker died, re-send tasks the broker lost (Celery beat runs it)."""
    try:
        return queue.ingestions_sweep()
    except (OperationalError, InterfaceError, psycopg.OperationalError) as error:
        # The database is down: nothing to sweep now; the next beat tick tries again.
        logger.warning("ingestion sweep skipped: the database is not reachable (%s)", str(error).splitlines()[0])
        return None
