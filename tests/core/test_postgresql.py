"""core.postgresql: the pool hands out an idle, healthy connection without a round trip, and never one the server
closed (a restart, a terminated session)."""

from __future__ import annotations

import select
import time

import psycopg
import pytest
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from core.postgresql.base import DatabaseWrapper, check_pooled_connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def round_trips(monkeypatch) -> list[int]:
    """The backend pid of each connection psycopg_pool's own check (the empty statement) was run on."""
    checked: list[int] = []
    own = ConnectionPool.check_connection

    def counted(conn):
        checked.append(conn.info.backend_pid)
        own(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return checked


@pytest.fixture
def pool():
    params = connection.get_connection_params()
    with ConnectionPool(kwargs={**params, "autocommit": True}, min_size=1, max_size=1, timeout=10,
                        check=check_pooled_connection) as pool:
        yield pool


def test_an_idle_healthy_connection_is_handed_out_without_a_round_trip(pool, round_trips):
    with pool.connection() as conn:
        first = conn.info.backend_pid
    with pool.connection() as conn:
        assert conn.info.backend_pid == first  # the same connection, again
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert round_trips == []


def test_a_connection_the_server_closed_is_checked_and_replaced_not_handed_out(pool, round_trips):
    with pool.connection() as conn:
        first = conn.info.backend_pid
        socket = conn.fileno()
    with psycopg.connect(**{**connection.get_connection_params(), "autocommit": True}) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone() == (True,)
    # What a restart does to every pooled connection: the server writes its notice and closes the socket.
    deadline = time.monotonic() + 10
    while not select.select([socket], [], [], 0.05)[0] and time.monotonic() < deadline:
        pass
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != first
    assert round_trips == [first]  # the check asked the server once, and the pool made a new connection


def test_a_connection_not_idle_is_asked_and_fails_the_check(round_trips):
    # The pool ends a connection's transaction when it gets it back: one still in a transaction is not to be used.
    params = connection.get_connection_params()
    with psycopg.connect(**params) as conn:  # not autocommit: the statement below leaves a transaction open
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.Error):
            check_pooled_connection(conn)
        assert round_trips == [conn.info.backend_pid]


def test_a_closed_connection_fails_the_check_at_once(round_trips):
    conn = psycopg.connect(**connection.get_connection_params())
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        check_pooled_connection(conn)
    assert round_trips == []


def test_the_engine_gives_django_s_pool_this_check(settings):
    default = connections["default"]
    assert isinstance(default, DatabaseWrapper)  # the embedded server's engine builds on it
    assert settings.POSTGRESQL_ENGINE == "core.postgresql"
    pooled = {**default.settings_dict, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": True,
              "OPTIONS": {**default.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1}}}
    wrapper = type(default)(pooled, alias="pool_check_test")
    try:
        assert wrapper.pool._check is check_pooled_connection  # psycopg_pool keeps the check it is given here
    finally:
        wrapper.close_pool()


def test_without_poll_the_check_asks_the_server(pool, round_trips, monkeypatch):
    monkeypatch.delattr("select.poll")  # as on Windows
    with pool.connection() as conn:
        first = conn.info.backend_pid
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert round_trips == [first, first]  # every time the pool hands it out
