"""Celery tasks: thin, idempotent, taking ids. The services decide everything."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from documents import ingest


@shared_task(
    acks_late=True,
    # A lost database connection is worth retrying; a bad file is not (the service marks it).
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=5,
)
def ingest_document(document_id: int) -> str | None:
    """Ingest one document; running it twice leaves one copy of its chunks."""
    document = ingest.document_ingest(document_id=document_id)
    return document.status if document else None
