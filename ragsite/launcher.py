"""`make run`: start what is missing, migrate, then run the Celery worker and the web server.

With nothing configured it uses the embedded PostgreSQL under var/ and a local Redis (started
when none answers at REDIS_URL). Ctrl-C stops the worker, the web server and whatever this
launcher started. A second run reuses the same data.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    ensure_secret_key(Path(os.environ.get("RAG_VAR_DIR", "").strip() or Path(__file__).resolve().parents[1] / "var"))
    plain_http_cookies(os.environ.get("HOST", "127.0.0.1"))
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


def ensure_secret_key(var_dir: Path) -> None:
    """With no SECRET_KEY configured, make a random one on the first run in var/secret_key (mode 600), which
    the settings read: sessions survive a restart and no key is shared with anyone else's installation."""
    if os.environ.get("SECRET_KEY", "").strip() or os.environ.get("SECRET_KEY_FILE", "").strip():
        return
    path = var_dir / "secret_key"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    except FileExistsError:
        os.chmod(path, 0o600)
        return
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(50))


def plain_http_cookies(host: str) -> None:
    """`make run` serves plain HTTP. On a loopback address nobody can listen in, so the session and CSRF
    cookies need not be Secure (a browser would not send them back over http://127.0.0.1, and signing in
    would fail); anywhere else they stay Secure unless the operator says otherwise, and we say why."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
        os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
    elif "SESSION_COOKIE_SECURE" not in os.environ:
        print(f"  Serving plain HTTP on {host}: sign-in cookies are Secure, so browsers send them over HTTPS\n"
              "  only. Put an HTTPS proxy in front (and set ALLOWED_HOSTS), or, on a trusted network only, set\n"
              "  SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false.", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
