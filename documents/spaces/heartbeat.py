"""Which embedding spaces each live web and worker process can embed for, so that a switch never outruns a deploy.

Every process that embeds (web processes embed queries, workers embed chunks) records, every
SPACE_HEARTBEAT_SECONDS, the ids of the spaces in use (some collection's active or target space) whose backend
it can build (``registry.can_embed``). A switch (or rollback) to a space is refused while a process seen within
SPACE_HEARTBEAT_STALE_SECONDS did not list it: the new active space's queries would fail there. A process that
stopped beating is dead, not lagging, and no longer counts.

The beat runs in a daemon thread of each process: web processes start it from the ASGI/WSGI entry point,
workers from Celery's worker signals (documents.spaces.tasks). A thread rather than a request hook: an idle
process must still say what it can embed before the switch, not after its first query fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from documents.models import Collection, EmbedderHeartbeat, EmbeddingSpace
from documents.spaces.registry import can_embed

logger = logging.getLogger(__name__)

# Rows of processes gone this long are deleted by the next beat of any process.
FORGET_AFTER_STALE = 10


def process_name(role: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def spaces_in_use() -> list[EmbeddingSpace]:
    """The spaces a process may be asked to embed for: some collection's active or target space."""
    used = Collection.objects.filter(Q(active_space__isnull=False) | Q(target_space__isnull=False))
    ids = set(used.values_list("active_space_id", flat=True)) | set(used.values_list("target_space_id", flat=True))
    return list(EmbeddingSpace.objects.filter(pk__in=ids - {None}).exclude(status=EmbeddingSpace.Status.RETIRED))


def beat(*, role: str) -> EmbedderHeartbeat:
    """Record now which spaces in use this process can embed for."""
    spaces = sorted(space.pk for space in spaces_in_use() if can_embed(space))
    now = timezone.now()
    row, _ = EmbedderHeartbeat.objects.update_or_create(
        process=process_name(role), defaults={"role": role, "spaces": spaces, "seen_at": now}
    )
    forget = timedelta(seconds=settings.SPACE_HEARTBEAT_STALE_SECONDS * FORGET_AFTER_STALE)
    EmbedderHeartbeat.objects.filter(seen_at__lt=now - forget).delete()
    return row


def live() -> list[EmbedderHeartbeat]:
    since = timezone.now() - timedelta(seconds=settings.SPACE_HEARTBEAT_STALE_SECONDS)
    return list(EmbedderHeartbeat.objects.filter(seen_at__gte=since).order_by("process"))


def processes_lacking(space: EmbeddingSpace) -> list[str]:
    """The live processes that did not report they can embed for ``space``."""
    return [row.process for row in live() if space.pk not in (row.spaces or [])]


_started: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def start(*, role: str) -> threading.Thread:
    """Beat from a daemon thread of this process (once per process and role); it dies with the process."""
    with _lock:
        key = f"{os.getpid()}:{role}"  # a forked child starts its own
        thread = _started.get(key)
        if thread is not None and thread.is_alive():
            return thread
        thread = threading.Thread(target=_beating, args=(role,), name=f"space-heartbeat-{role}", daemon=True)
        _started[key] = thread
        thread.start()
        return thread


def _beating(role: str) -> None:
    stopped = threading.Event()
    while True:
        try:
            beat(role=role)
        except DatabaseError as error:  # the database is away: the next beat tries again
            logger.warning("space heartbeat of %s not written (%s)", role, str(error).splitlines()[0])
        except Exception:  # a heartbeat never takes its process down
            logger.exception("space heartbeat of %s failed", role)
        finally:
            connections.close_all()  # this thread's own connection
        if stopped.wait(settings.SPACE_HEARTBEAT_SECONDS):
            return
