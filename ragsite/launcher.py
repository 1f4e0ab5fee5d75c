"""`make run`: start what is missing, migrate, then run and supervise the Celery worker and the web server.

With nothing configured it uses the embedded PostgreSQL under var/ and a local Redis (started
when none answers at REDIS_URL). A worker or web server that dies is started again, with backoff, and
the launcher says so; the other keeps running. Ctrl-C stops the worker, the web server and whatever this
launcher started, and leaves no process behind. A second run reuses the same data.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Celery's default queue (task_default_queue): small documents and the sweep; large documents go to
# "<it>.large" (documents.queue.ingestion_queues).
DEFAULT_QUEUE = "celery"


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    ensure_secret_key(Path(os.environ.get("RAG_VAR_DIR", "").strip() or Path(__file__).resolve().parents[1] / "var"))
    plain_http_cookies(os.environ.get("HOST", "127.0.0.1"))
    from ragsite import settings as config  # noqa: I001 — only the env-derived values, before Django
    from ragsite.devservices import ensure_redis, stop_embedded_database, stop_redis

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
    children = [
        *(Supervised(name, command) for name, command in worker_commands(python, concurrency, config.VAR_DIR)),
        Supervised("web server", [python, "-m", "uvicorn", "ragsite.asgi:application", "--host", host,
                                  "--port", str(port), "--timeout-graceful-shutdown", "5"],
                   env={"DATABASE_POOL": "true", **os.environ}),
    ]
    for child in children:
        child.start()
    print(f"\n  RAG chat is starting on http://{host}:{port}/  (admin: /admin/, API: /api/v1/docs)\n"
          "  Press Ctrl-C to stop.\n", flush=True)

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for child in children:
                if not child.tend(say=lambda line: print(line, file=sys.stderr, flush=True)):
                    code, stopping = 1, True
            time.sleep(0.5)
    finally:
        for child in reversed(children):  # the web server first: no new work while the worker finishes
            child.terminate()
        for child in reversed(children):
            child.stop()
    if started_redis:
        stop_redis(config.REDIS_URL)
    if embedded:
        from django.db import connections

        connections.close_all()
        stop_embedded_database(config.VAR_DIR)
    print("Stopped.", flush=True)
    return code


# Restarts: after 1, 2, 4 ... seconds, at most MAX_BACKOFF_SECONDS. A process that ran STABLE_SECONDS
# before dying starts the count again; one that dies quickly MAX_QUICK_FAILURES times in a row is broken
# (a port in use, a bad setting), and the launcher stops with its output rather than loop.
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0
MAX_QUICK_FAILURES = 5
STOP_TIMEOUT_SECONDS = 20.0

PR_SET_PDEATHSIG = 1


def _die_with(launcher: int) -> Callable[[], None]:
    """For the child, before exec: be sent SIGTERM when the launcher dies, even by SIGKILL (Linux)."""

    def arrange() -> None:
        if not sys.platform.startswith("linux"):
            return
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != launcher:  # it died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


class Supervised:
    """A child the launcher restarts when it dies: in a process group of its own, so that it is stopped whole.

    The Celery worker forks pool processes and a beat process; killed alone (``kill -9``, the OOM killer),
    its main process leaves them running, and the orphaned beat keeps sending tasks. Its group is
    killed with it, before a new worker starts. A group of its own also keeps the terminal's Ctrl-C for
    the launcher, which stops each child in order. If the launcher itself is killed, each child is sent
    SIGTERM (PR_SET_PDEATHSIG) and stops its own processes.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures = 0  # in a row, the last ones soon after starting
        self.restart_at: float | None = None

    def start(self) -> subprocess.Popen:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                        preexec_fn=_die_with(os.getpid()))
        self.started_at, self.restart_at = time.monotonic(), None
        return self.process

    def tend(self, *, say: Callable[[str], None]) -> bool:
        """Restart the child when it is due; False when it keeps dying and the launcher should stop."""
        now = time.monotonic()
        if self.process is None:
            if self.restart_at is not None and now >= self.restart_at:
                process = self.start()
                say(f"Restarted the {self.name} (pid {process.pid}).")
            return True
        if not self._exited(self.process):
            return True
        self._kill_group(self.process)  # what it leaves behind: the worker's pool and beat processes
        returncode = self.process.wait()
        self.process = None
        self.failures = self.failures + 1 if now - self.started_at < STABLE_SECONDS else 1
        if self.failures > MAX_QUICK_FAILURES:
            say(f"The {self.name} exited ({describe(returncode)}) {MAX_QUICK_FAILURES + 1} times in a row soon "
                "after starting; stopping. Its output above says why.")
            return False
        delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (self.failures - 1))
        say(f"The {self.name} exited ({describe(returncode)}); restarting it in {delay:g} s.")
        self.restart_at = now + delay
        return True

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM): it stops its own processes."""
        if self.process is not None and not self._exited(self.process):
            self.process.terminate()

    def stop(self) -> None:
        """Wait for the child to stop, SIGKILL to its whole group after a grace time or once it is gone."""
        if self.process is None:
            return
        self.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not self._exited(self.process) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._kill_group(self.process)
        self.process.wait()

    @staticmethod
    def _exited(process: subprocess.Popen) -> bool:
        """Whether the child has exited, left unreaped: its group id cannot be reused before _kill_group."""
        try:
            return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped
            return True

    @staticmethod
    def _kill_group(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in it


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"code {returncode}"


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


def worker_commands(
    python: str, concurrency: int, var_dir: Path, queue: str = DEFAULT_QUEUE
) -> list[tuple[str, list[str]]]:
    """The Celery workers `make run` supervises: ``concurrency`` pool processes in all.

    Fair ingestion (documents.queue): from two processes on, one takes small documents only; the others take
    large ones first and small ones when none waits; so a one-page upload never waits behind a novel. A
    single process takes everything.
    -B: Celery beat inside the first worker, for the periodic sweep that restarts ingestions a dead worker
    left behind and re-sends tasks the broker lost (documents.queue.ingestions_sweep). One beat.
    """
    celery = [python, "-m", "celery", "-A", "ragsite", "worker", "--loglevel", "INFO"]
    workers = [
        ("worker", [*celery, "-n", f"any-{queue}@%h", "-Q", f"{queue}.large,{queue}",
                    "--concurrency", str(max(1, concurrency - 1)), "-B",
                    "--schedule", str(var_dir / "celerybeat-schedule")]),
        ("small-document worker", [*celery, "-n", f"small-{queue}@%h", "-Q", queue, "--concurrency", "1"]),
    ]
    return workers if concurrency >= 2 else workers[:1]


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
