"""Celery tasks of the operations app (Celery beat runs the recall sample nightly: CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from ops import recall


@shared_task(ignore_result=True)
def sample_recall() -> int:
    """Sample the HNSW indexes' recall; returns how many distances were measured."""
    return len(recall.sample_recall())
