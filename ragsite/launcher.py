"""`make run`: start what is missing, migrate, then run the Celery worker and the web server.

With nothing configured it uses the embedded PostgreSQL under var/ and a local Redis (started
when none answers at REDIS_URL). Ctrl-C stops the worker, the web server and whatever this
launcher started. A second run reuses the same data.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    from ragsite import settings as config  # noqa: I001 — only the env-derived values, before Django
    from ragsite.services import ensure_redis, stop_embedded_database, stop_redis

    port = int(os.environ.get("PORT", "8000"))
    host = os.environ.get("HOST", "127.0.0.1")
    started_redis = ensure_redis(config.REDIS_URL, config.VAR_DIR)
    embedded = not os.environ.get("DATABASE_URL")

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=1)
    if not config.DEBUG:
        call_command("collectstatic", interactive=False, verbosity=0)
    announce_first_user()

    python = sys.executable
    concurrency = int(os.environ.get("WORKER_CONCURRENCY", "2"))
    # Each worker process runs its own local embedding model: share the cores between them.
    os.environ.setdefault("EMBEDDING_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    # -B: Celery beat inside the worker, for the periodic sweep that restarts ingestions a dead worker left
    # behind and re-sends tasks the broker lost (documents.ingest.ingestions_sweep). One worker, one beat.
    worker = subprocess.Popen(
        [python, "-m", "celery", "-A", "ragsite", "worker", "--loglevel", "INFO",
         "--concurrency", str(concurrency), "-B", "--schedule", str(config.VAR_DIR / "celerybeat-schedule")],
    )
    web = subprocess.Popen(
        [python, "-m", "uvicorn", "ragsite.asgi:application", "--host", host, "--port", str(port),
         "--timeout-graceful-shutdown", "5"],
        env={"DATABASE_POOL": "true", **os.environ},
    )
    print(f"\n  RAG chat is starting on http://{host}:{port}/  (admin: /admin/, API: /api/v1/docs)\n"
          "  Press Ctrl-C to stop.\n", flush=True)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, proc in (("worker", worker), ("web server", web)):
            if proc.poll() is not None:
                print(f"The {name} exited with code {proc.returncode}; stopping.", file=sys.stderr)
                code = proc.returncode or 1
                stopping = True
        time.sleep(0.5)

    for proc in (web, worker):
        if proc.poll() is None:
            proc.terminate()
    for proc in (web, worker):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if started_redis:
        stop_redis(config.REDIS_URL)
    if embedded:
        from django.db import connections

        connections.close_all()
        stop_embedded_database(config.VAR_DIR)
    print("Stopped.", flush=True)
    return code


def announce_first_user() -> None:
    """On a new installation, create an administrator so that the first sign-in just works."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    if users.exists():
        return
    password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    username = os.environ.get("ADMIN_USERNAME", "admin")
    users.create_superuser(username, "", password)
    print(f"\n  Created the administrator account  {username} / {password}\n"
          "  (change it with: .venv/bin/python manage.py changepassword admin)\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
