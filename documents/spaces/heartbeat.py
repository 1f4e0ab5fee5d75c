"""Which embedding spaces each live web and worker process can embed for, so that a switch never outruns a deploy.

Every process that embeds (web processes embed queries, workers embed chunks) records, every
SPACE_HEARTBEAT_SECONDS, the ids of the spaces in use (some collection's active or target space) whose backend
it can build (``registry.can_embed``). A switch (or rollback) to a space is refused while a process seen within
SPACE_HEARTBEAT_STALE_SECONDS did not list it: the new active space's queries would fail there. A process that
stopped beating is dead, not lagging, and no longer counts.

The beat runs in a daemon thread of each process: web processes start it when the ASGI server starts them
(``Lifespan``, in ragsite/asgi.py), workers from Celery's worker signals (documents.spaces.tasks). A thread
rather than a request hook: an idle process must still say what it can embed before the switch, not after its
first query fails.
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
    """The live processes that did not report they can embed for ``space``. This process answers for itself
    now (its last beat may predate the space) rather than by its rows."""
    own = process_name("")
    rows = live()
    mine = [row.process for row in rows if row.process.startswith(own)]
    others = [row.process for row in rows if not row.process.startswith(own) and space.pk not in (row.spaces or [])]
    return (mine if mine and not can_embed(space) else []) + others


class Beating:
    """A daemon thread beating every SPACE_HEARTBEAT_SECONDS until ``stop`` (or its process ends)."""

    def __init__(self, role: str):
        self.role = role
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"space-heartbeat-{role}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                beat(role=self.role)
            except DatabaseError as error:  # the database is away: the next beat tries again
                logger.warning("space heartbeat of %s not written (%s)", self.role, str(error).splitlines()[0])
            except Exception:  # a heartbeat never takes its process down
                logger.exception("space heartbeat of %s failed", self.role)
            finally:
                connections.close_all()  # this thread's own connection
            if self._stopped.wait(settings.SPACE_HEARTBEAT_SECONDS):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.thread.join()


_started: dict[str, Beating] = {}
_lock = threading.Lock()


def start(*, role: str) -> Beating:
    """Beat from a daemon thread of this process (once per process and role; a forked child starts its own)."""
    with _lock:
        key = f"{os.getpid()}:{role}"
        beating = _started.get(key)
        if beating is None or not beating.thread.is_alive():
            beating = _started[key] = Beating(role)
        return beating


def refresh() -> None:
    """Beat now for every role this process beats for (a worker that just embedded for a new space says so at
    once, instead of at its next heartbeat)."""
    for key, beating in list(_started.items()):
        if key.startswith(f"{os.getpid()}:") and beating.thread.is_alive():
            beat(role=beating.role)


class Lifespan:
    """ASGI middleware: the web process starts beating when the server starts it (the ASGI lifespan startup),
    which Django's handler does not answer. Importing the application (a test, a management command) starts
    nothing; every other scope goes to the application unchanged."""

    def __init__(self, app, *, role: str = "web"):
        self.app, self.role = app, role

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                start(role=self.role)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
