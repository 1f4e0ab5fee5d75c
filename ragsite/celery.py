"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

app = Celery("ragsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def sweep_when_a_worker_starts(sender=None, **kwargs):
    """A worker that starts (after a crash, a deploy) first picks up what the previous one left behind.

    Beat repeats the sweep every INGEST_SWEEP_SECONDS (CELERY_BEAT_SCHEDULE); this one runs at once.
    """
    from django.conf import settings

    app.send_task("documents.tasks.sweep", expires=settings.INGEST_SWEEP_SECONDS)
