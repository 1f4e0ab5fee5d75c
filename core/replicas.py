"""Read replicas: which database serves a read, keeping each user's own writes visible to them.

``DATABASE_REPLICA_URLS`` makes one Django alias per streaming replica (``replica_1``, ...; settings). Only
reads that say so go to a replica: searches and chat retrieval (``documents.db.vector_cursor(user)``) and the
ORM reads of views decorated with ``reads_from_replica``. Everything else — writes, the admin, tasks, every
read nobody opted in — stays on the primary. With no replica configured none of this runs: no query, no
cache look-up (``read_alias`` returns the primary before anything else).

Read-your-writes by WAL position, not by a time window. After a user's write commits, the primary's
``pg_current_wal_lsn()`` is remembered for that user (``note_write``: the web's unsafe requests through
``ReadYourWritesMiddleware``, the worker's stored documents through ``documents.store``). A replica serves that
user again only once its ``pg_last_wal_replay_lsn()`` has passed that position. A window ("primary for N
seconds after a write") would have to be longer than the worst lag to be safe, sends users to the primary for
that long even when the replica is a millisecond behind, and still breaks when the replica falls further
behind than N; the position is exact both ways and costs one cached comparison per read.

Positions live in the Django cache (Redis), keyed by user id, because the write and the read are often in
different processes (an upload stored by the worker, then a question to the web server). A position is kept
``2 × REPLICA_MAX_LAG_SECONDS + 60`` seconds: a replica still short of it after that long has lagged past the
limit (its lag is counted from the last commit it replayed, which is older than the user's) and is skipped
anyway. When the cache cannot be read, the read goes to the primary.

A replica's health (``pg_is_in_recovery()``, replay position, lag) is checked at most every
``REPLICA_CHECK_SECONDS`` per process, on the replica's own connection; one that is down is tried again after
``DOWN_RECHECK_SECONDS``. Lag is 0 when the replica has replayed everything it received, else the age of the
last transaction it replayed: on an idle primary that age grows while nothing is missing, so it only counts
while WAL is waiting. A replica that does not answer, is not in recovery (promoted, or a primary's URL given by
mistake), or lags more than ``REPLICA_MAX_LAG_SECONDS`` is skipped; the primary serves what it would have.
Each user keeps to one replica while it is healthy (chosen from the user's id), so that two replicas at
different positions cannot show them a document and then lose it again.
"""

from __future__ import annotations

import logging
import math
import select
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

PRIMARY = DEFAULT_DB_ALIAS
# A replica that did not answer is tried again after this long, so that a dead one costs a failed connection
# (up to its connect_timeout) once per process every few seconds, not on every request.
DOWN_RECHECK_SECONDS = 10.0

HEALTH_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0) END::float8"
)


@dataclass(frozen=True)
class Health:
    usable: bool
    replay_lsn: int  # WAL bytes replayed; 0 when unknown
    lag_seconds: float
    checked_at: float  # time.monotonic()
    reason: str = ""  # why it is not usable


_health: dict[str, Health] = {}
_health_lock = threading.Lock()
# The replica alias an opted-in view's ORM reads use (ReplicaRouter), for the length of that view.
_view_alias: ContextVar[str | None] = ContextVar("replica_view_alias", default=None)


def replica_aliases() -> list[str]:
    return list(settings.DATABASE_REPLICAS)


def lsn_value(text: str) -> int:
    """``'16/B374D848'`` (PostgreSQL's pg_lsn) as a number of bytes, so that positions compare."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _position_key(user_id: Any) -> str:
    return f"replicas:written:{user_id}"


def _user_id(user: Any) -> Any:
    return user.pk if user is not None and getattr(user, "is_authenticated", False) else None


def note_write(user_id: Any) -> None:
    """Remember the primary's WAL position for ``user_id`` after their write committed (nothing without replicas).

    Call it after the commit (``transaction.on_commit``): the position read inside a transaction would
    precede its commit record.
    """
    if not settings.DATABASE_REPLICAS or user_id is None:
        return
    try:
        with connections[PRIMARY].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            position = lsn_value(cursor.fetchone()[0])
        key = _position_key(user_id)
        # Two writes of one user finishing together may note their positions out of order; keep the later.
        if (cache.get(key) or 0) < position:
            cache.set(key, position, timeout=2 * settings.REPLICA_MAX_LAG_SECONDS + 60)
    except (DatabaseError, RedisError, OSError) as error:
        # The write itself committed; the worst outcome is a search that misses it until the replica catches up.
        logger.warning("could not note user %s's write position for the replicas: %s", user_id, error)


def note_write_on_commit(user_id: Any) -> None:
    """``note_write`` once the current transaction commits (at once outside one); nothing without replicas."""
    if settings.DATABASE_REPLICAS and user_id is not None:
        transaction.on_commit(partial(note_write, user_id))


def written_position(user_id: Any) -> int | None:
    """The WAL position a replica must have replayed to serve ``user_id`` (0: none noted; None: unknown)."""
    if user_id is None:
        return 0
    try:
        return int(cache.get(_position_key(user_id)) or 0)
    except (RedisError, OSError) as error:
        logger.warning("replica routing: the cache does not answer (%s); reading from the primary", error)
        return None


def read_alias(user: Any) -> str:
    """The database for ``user``'s read-only query: a healthy replica that has their last write, else the primary."""
    aliases = settings.DATABASE_REPLICAS
    if not aliases:
        return PRIMARY
    user_id = _user_id(user)
    needed = written_position(user_id)
    if needed is None:
        return PRIMARY
    start = hash(user_id) % len(aliases) if user_id is not None else 0
    for alias in [*aliases[start:], *aliases[:start]]:
        health = health_of(alias)
        if health.usable and health.replay_lsn >= needed:
            return alias
    return PRIMARY


def read_connection(user: Any) -> Any:
    """The connection for ``user``'s read-only work: ``read_alias``'s, connected, else the primary's.

    A replica that went away since its last check (its idle connection dead, a new one refused) is skipped
    from now on and the primary serves this read, so the time a check is trusted costs no failed request.
    One that fails in the middle of a query still fails that query; the next read finds it gone.
    """
    alias = read_alias(user)
    connection = connections[alias]
    if alias == PRIMARY:
        return connection
    close_if_dead(connection)
    try:
        connection.ensure_connection()
    except DatabaseError as error:
        mark_down(alias, f"does not answer ({_first_line(error)})")
        return connections[PRIMARY]
    return connection


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0]


def health_of(alias: str, *, fresh: bool = False) -> Health:
    """The replica's health, checked now when the last check is older than allowed (or ``fresh``)."""
    now = time.monotonic()
    known = _health.get(alias)
    if known is not None and not fresh:
        wait = settings.REPLICA_CHECK_SECONDS if known.usable or known.replay_lsn else DOWN_RECHECK_SECONDS
        if now - known.checked_at < wait:
            return known
    health = _check(alias, now)
    with _health_lock:
        _health[alias] = health
    if not health.usable and (known is None or known.usable):  # once per fall, not at every check
        logger.warning("read replica %s is skipped: %s", alias, health.reason)
    return health


def mark_down(alias: str, reason: str) -> None:
    """Skip ``alias`` until its next check (a query on it just failed)."""
    with _health_lock:
        _health[alias] = Health(False, 0, math.inf, time.monotonic(), reason)
    logger.warning("read replica %s is skipped: %s", alias, reason)


def forget_health() -> None:
    """Check every replica afresh on its next use (tests; a replica's address changed)."""
    with _health_lock:
        _health.clear()


def _check(alias: str, now: float) -> Health:
    connection = connections[alias]
    close_if_dead(connection)
    try:
        with connection.cursor() as cursor:
            cursor.execute(HEALTH_SQL)
            in_recovery, replayed, lag = cursor.fetchone()
    except DatabaseError as error:
        _close_quietly(connection)
        return Health(False, 0, math.inf, now, f"does not answer ({_first_line(error)})")
    if not in_recovery or replayed is None:
        return Health(False, 0, math.inf, now, "is not a standby (pg_is_in_recovery() is false)")
    position = lsn_value(replayed)
    if lag > settings.REPLICA_MAX_LAG_SECONDS:
        return Health(
            False,
            position,
            lag,
            now,
            f"lags {lag:.1f} s, more than REPLICA_MAX_LAG_SECONDS ({settings.REPLICA_MAX_LAG_SECONDS:g})",
        )
    return Health(True, position, lag, now)


def close_if_dead(connection: Any) -> None:
    """Close a connection whose server has gone (stopped, restarted, crashed), without a round trip.

    An idle PostgreSQL connection has nothing to read: when its socket is readable, the server has sent
    its last words ("terminating connection") or closed it. Checked before a replica connection is used, so
    a replica stopped since the last request is reconnected to (and found down) instead of failing the query.
    """
    raw = connection.connection
    if raw is None:
        return
    try:
        readable, _, _ = select.select([raw.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        readable = [True]
    if readable:
        _close_quietly(connection)


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except DatabaseError:
        connection.connection = None  # already broken: nothing to close cleanly


class ReadYourWritesMiddleware:
    """After a signed-in user's unsafe request (POST, PUT, PATCH, DELETE), note the primary's WAL position.

    One place covers every write a person makes through the site, the API and the admin (uploads,
    collections and their members, moves, deletes): the view has returned, so its writes are committed.
    Settings add it only when replicas are configured.
    """

    SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if request.method not in self.SAFE:
            user_id = _user_id(getattr(request, "user", None))
            if user_id is not None:
                note_write(user_id)
        return response


def reads_from_replica(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let a read-only view's ORM queries (GET and HEAD only) go to ``read_alias(request.user)``.

    Opt-in, view by view: a view that writes, or reads what it just wrote, must not have it.
    """

    @wraps(view)
    def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.method not in ("GET", "HEAD") or not settings.DATABASE_REPLICAS:
            return view(request, *args, **kwargs)
        token = _view_alias.set(read_connection(getattr(request, "user", None)).alias)
        try:
            return view(request, *args, **kwargs)
        finally:
            _view_alias.reset(token)

    return wrapped


class ReplicaRouter:
    """Sends ORM reads to a replica only inside ``reads_from_replica`` views; every write to the primary.

    Writes name the primary explicitly: otherwise Django writes an instance back to the database it was
    read from, which for an opted-in view's objects would be the (read-only) replica.
    """

    # Who is signed in and what they may do is never read stale (a password just changed, a session just ended).
    PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "admin", "contenttypes"})

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if model._meta.app_label in self.PRIMARY_ONLY_APPS:
            return None
        return _view_alias.get()

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # every alias is the same database

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db in settings.DATABASE_REPLICAS else None
