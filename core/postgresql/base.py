"""Django's PostgreSQL backend, whose connection pool checks a connection it hands out without a round trip.

The settings name this engine for ``DATABASE_URL`` and its replicas (the embedded server's engine,
ragsite.devservices.postgresql, builds on it). With ``DATABASE_POOL`` on, Django has psycopg_pool check every
connection it hands out with ``ConnectionPool.check_connection``: an empty statement, one round trip to the server
before every request's first query (0.13 ms on a quiet two-core host, bench/request_path.py). Here the check asks
the connection's socket first (``check_pooled_connection``).
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq
from psycopg_pool import ConnectionPool


def check_pooled_connection(connection: psycopg.Connection) -> None:
    """Raise if ``connection``, idle in the pool, cannot be used; the round trip only when something happened to it.

    An idle connection's socket has nothing to read unless the server sent something: the notice and end of file of
    a restart or a terminated session (what used to make a pooled connection fail its next request), or a message
    nobody asked for. Then, or when the connection is not idle, psycopg_pool's own check runs: the empty statement
    that raises on a broken connection. Otherwise the connection is handed out at the cost of one ``poll`` (about a
    microsecond). What no check before use sees in time either way, a peer that vanished without closing the socket
    (a cut network), is the TCP keepalive's and the statement timeout's to find.
    """
    if connection.closed or connection.broken:
        raise psycopg.OperationalError("the pooled connection is closed")
    if connection.info.transaction_status != pq.TransactionStatus.IDLE or _readable(connection):
        ConnectionPool.check_connection(connection)


def _readable(connection: psycopg.Connection) -> bool:
    """Whether the server sent something (True where poll() is missing, Windows: then the round trip always runs)."""
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> ConnectionPool | None:
        pool: ConnectionPool | None = super().pool
        # Django passes psycopg_pool's own check when CONN_HEALTH_CHECKS is on (the settings' default) and has no
        # setting for another: the pool keeps it as ``_check`` (psycopg_pool 3.2 and 3.3; tests/core/test_postgresql.py
        # fails if that changes).
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = check_pooled_connection
        return pool
