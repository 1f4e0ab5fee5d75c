"""Shared by the benchmark scripts: a dedicated database, machine facts, BENCHMARKS.md tables.

Each script runs Django against its own database on the same PostgreSQL the app uses
(``DATABASE_URL``, or the embedded server under ``var/``), so benchmarks never touch the data
of ``make run``. Shared data is found through ``RAG_SHARED_DIR`` (default ``../shared``).
"""

from __future__ import annotations

import datetime
import http.client
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAG_SHARED_DIR", ROOT.parent / "shared")).resolve()
BENCHMARKS = ROOT / "bench" / "BENCHMARKS.md"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2-int8"


def setup_django(database: str, **environment: str) -> None:
    """Point Django at ``database`` (created if missing) on the app's server, then set it up."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    os.environ.setdefault("DEBUG", "true")  # in-process settings as they were before DEBUG defaulted to false
    if (SHARED / "tiktoken").is_dir():
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))
    for key, value in environment.items():
        os.environ[key] = value
    base = os.environ.get("DATABASE_URL")
    if not base:
        from ragsite.devservices import embedded_database_url

        base = embedded_database_url(Path(os.environ.get("RAG_VAR_DIR", ROOT / "var")))
    import psycopg

    with psycopg.connect(base, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = _with_database(base, database)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def ensure_redis(url: str) -> None:
    """A Redis at ``url``: a local redis-server is started when none answers, as the tests and `make run` do."""
    from ragsite.devservices import ensure_redis

    ensure_redis(url, Path(os.environ.get("RAG_VAR_DIR", ROOT / "var")))


def _with_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def require_shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        sys.exit(f"{path} not found: set RAG_SHARED_DIR to the shared data folder")
    return path


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import version

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0].split()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector = cursor.fetchone()[0]
    return (f"PostgreSQL {server}, pgvector {pgvector}, Django {version('django')}, psycopg {version('psycopg')}, "
            f"Python {platform.python_version()}")


def record(title: str, settings: str, table: list[list[str]], notes: str = "") -> None:
    """Append a dated table to BENCHMARKS.md (newest last), then regenerate the goals summary at its top."""
    header, *rows = table
    lines = [
        f"\n## {title} — {datetime.date.today().isoformat()}\n",
        f"Machine: {machine()}. {versions()}.  ",
        f"Settings: {settings}\n",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]
    if notes:
        lines += ["", notes]
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text(
            "# Benchmarks\n\nWritten by the scripts in `bench/` (each appends its table; newest last). "
            "Absolute times depend on the machine; the ratios measured in one run are what to compare.\n"
        )
    with BENCHMARKS.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    import _summary  # beside this module: the goals summary at the top follows the newest runs

    _summary.write(BENCHMARKS)


def report(quick: bool, title: str, settings: str, table: list[list[str]], notes: str = "") -> None:
    """``record`` the table, or with ``--quick`` (tiny sizes, figures not comparable) only print it."""
    if not quick:
        record(title, settings, table, notes)
        return
    print(f"\n{title} (--quick: not recorded)\n{settings}")
    print("\n".join(" | ".join(str(cell) for cell in row) for row in table))
    if notes:
        print(notes)


def peer_python() -> str:
    """A Python with langchain-postgres, in its own venv (it pins an older pgvector than the app)."""
    import subprocess

    venv = Path(os.environ.get("RAG_VAR_DIR", ROOT / "var")) / "bench-peer-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    requirements = ROOT / "bench" / "requirements-peer.txt"
    if not marker.exists() or marker.read_text() != requirements.read_text():
        print(f"installing the peer (langchain-postgres) into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
        marker.write_text(requirements.read_text())
    return str(python)


def database_url(database: str) -> str:
    """The URL of ``database`` on the app's PostgreSQL (for peers that connect on their own)."""
    base = os.environ.get("DATABASE_URL_BASE") or os.environ.get("DATABASE_URL", "")
    if not base:
        from ragsite.devservices import embedded_database_url

        base = embedded_database_url(Path(os.environ.get("RAG_VAR_DIR", ROOT / "var")))
    return _with_database(base, database)


def vector_connection(**options):
    """A plain psycopg connection to the benchmark's database (``DATABASE_URL``): autocommit, vectors sent in binary;
    ``options`` go to ``psycopg.connect`` (e.g. ``prepare_threshold=None``)."""
    import psycopg
    from pgvector.psycopg import register_vector

    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, **options)
    register_vector(conn)
    return conn


def serve_uvicorn(app: str, log_path: Path, env: dict | None = None, headers: dict | None = None,
                  extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    """uvicorn serving ``app`` (``module:attribute`` of bench/) on a free loopback port, as ``make run`` serves the
    product (httptools + uvloop, picked up by uvicorn itself); returns (process, port) once GET
    /api/v1/openapi.json answers 200. Its output goes to ``log_path``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(log_path, "w")  # closed when the process ends
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "5", *extra],
        cwd=ROOT, env=env if env is not None else dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn ({app}) exited ({server.returncode}); see {log.name}")
        try:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            client.request("GET", "/api/v1/openapi.json", headers=headers or {})
            if client.getresponse().status == 200:
                client.close()
                return server, port
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise RuntimeError(f"uvicorn ({app}) did not answer within 90 s; see {log.name}")
