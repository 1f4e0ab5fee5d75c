"""Shared fixtures: users, collections, generated documents, a real Celery worker.

Everything runs on real services: the embedded PostgreSQL + pgvector, Redis at REDIS_URL
(started locally if nothing answers), and a Celery worker consuming from a real broker.
Tests on files from the shared data folder find it through RAG_SHARED_DIR (default
../shared); without it they skip, naming the variable — except in CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.openai_server import llm, openai_server  # noqa: F401  (the OpenAI-protocol server fixtures)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_DIR = Path(os.environ.get("RAG_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


def pytest_configure(config):
    # pytest sets its temporary root (/tmp/pytest-of-<user>) back to mode 0700 whenever a run starts. The embedded
    # PostgreSQL of a whole-site test runs as its own user (when root runs the tests) with its data below that
    # root: another run starting on the machine would lock it out mid-test. Each run gets a root of its own.
    if "PYTEST_DEBUG_TEMPROOT" not in os.environ and not hasattr(config, "workerinput"):
        root = tempfile.mkdtemp(prefix="rag-tests-")
        os.chmod(root, 0o711)
        os.environ["PYTEST_DEBUG_TEMPROOT"] = root  # xdist's workers inherit it
        config.own_temporary_root = root  # removed at the end (pytest keeps none of a root it did not choose)
    # Fast, deterministic embeddings for everything except the tests that load a real model.
    settings.EMBEDDING_BACKEND = "hashing"
    # The cache (Redis) is shared with other runs: counters (rate limits) must not carry over.
    settings.CACHES["default"]["KEY_PREFIX"] = f"test-{os.getpid()}-{time.time_ns()}"
    # Limits are off unless a test is about them (tests ask many questions quickly).
    settings.RATE_LIMITS = {"chat": "", "upload": ""}
    # PBKDF2 costs most of a second per user created or signed in; no test here is about it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]



def pytest_unconfigure(config):
    root = getattr(config, "own_temporary_root", None)
    if root:
        shutil.rmtree(root, ignore_errors=True)


def require_shared(relative: str) -> Path:
    """The path of a shared data file; skip (fail in CI) when RAG_SHARED_DIR lacks it."""
    path = SHARED_DIR / relative
    if not path.exists():
        message = f"{path} not found: set RAG_SHARED_DIR to the shared data folder"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared(".")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require_shared("data/fixtures")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return require_shared("models/all-MiniLM-L6-v2-int8")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """One test database per run, so that parallel runs on one embedded server do not collide."""
    from django.db import connections

    test_settings = connections["default"].settings_dict.setdefault("TEST", {})
    test_settings["NAME"] = f"test_ragchat_{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def redis_service():
    """Real Redis at REDIS_URL; started on loopback when nothing answers (fails in CI)."""
    from ragsite.devservices import ensure_redis, redis_answers

    if not redis_answers(settings.REDIS_URL):
        if IN_CI:
            pytest.fail(f"Redis does not answer at {settings.REDIS_URL}")
        ensure_redis(settings.REDIS_URL, settings.VAR_DIR)
    return settings.REDIS_URL


def wait_until_a_connection_waits_for_a_lock(what: str = "a connection") -> None:
    """Return once some session of this database waits for a lock (seen from a connection of its own)."""
    from django.db import connections

    watcher = connections.create_connection("default")
    try:
        with watcher.cursor() as cursor:
            for _ in range(300):
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                if cursor.fetchone()[0]:
                    return
                time.sleep(0.1)
    finally:
        watcher.close()
    raise AssertionError(f"{what} never waited for the lock")


def start_of_a_rate_window(window: int = 60, *, margin: float = 20.0) -> None:
    """Wait, if need be, for a new window of core.ratelimit's fixed windows (aligned on the clock) when fewer than
    ``margin`` seconds are left of this one: a test that spends its limit and then expects a refusal would
    otherwise pass into the next window between the two, and be allowed (seen in CI)."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.05)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "correct horse battery")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "correct horse battery")


@pytest.fixture
def collection(user):
    from documents.models import Collection

    return Collection.objects.create(name="Handbook", owner=user)


@pytest.fixture(autouse=True)
def forget_spaces_after_a_flush(request):
    """After a test on a committed database (flushed at its end, or migrated back and forth, which restarts the
    ids), the embedding spaces this process remembers (documents.spaces.registry and .vectors: by id, for the
    process's life, since a space never changes) are gone: forget them, or a later test's search would take a
    space that reused an id for the one this process knew (a 64-dimension space for a 384 one)."""
    yield
    marker = request.node.get_closest_marker("django_db")
    committed = marker is not None and bool(marker.kwargs.get("transaction") or marker.args[:1] == (True,))
    if committed or {"transactional_db", "live_server"} & set(request.fixturenames):
        from documents.spaces import registry, vectors

        registry._default_ids.clear()
        registry._default_spaces.clear()
        vectors._spaces.clear()


@pytest.fixture(autouse=True)
def media_root(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(scope="session", autouse=True)
def celery_app(redis_service):
    """The project's Celery app on a queue of this run's own, dropped at the end.

    Autouse: a test that uploads without a worker must not send its task to the default queue, where a
    developer's `make run` worker on the same Redis would take it.
    """
    import redis

    from ragsite.celery import app

    queue = f"rag-test-{os.getpid()}"
    app.conf.task_default_queue = queue
    app.conf.task_always_eager = False
    yield app
    redis.Redis.from_url(app.conf.broker_url).delete(queue, queue + ".large")


@pytest.fixture(scope="session")
def celery_worker_session(celery_app, redis_service, django_db_setup, django_db_blocker):
    """A real Celery worker (in-process thread) consuming from the real Redis broker."""
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    def close_the_worker_threads_connections(sender=None, **kwargs):
        # A worker process keeps its connection from task to task (CELERY_DB_REUSE_MAX); this worker's thread
        # must not: its connection would outlive the session and keep the test database from being dropped.
        # (The tests run in the main thread: tasks they run eagerly, or signals they send, keep theirs.)
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()

    task_postrun.connect(close_the_worker_threads_connections, weak=False)
    with django_db_blocker.unblock():
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30,
            queues=[celery_app.conf.task_default_queue, celery_app.conf.task_default_queue + ".large"],
        ) as worker:
            yield worker


def wait_until_the_worker_is_idle(celery_app, timeout: float = 120.0) -> None:
    """Return once the test queue is empty and the worker holds no task (twice in a row).

    A task still running when a transactional test ends would hold locks while the database is flushed,
    and the flush fails (or the task writes into the next test's data).
    """
    import redis
    from celery.worker import state

    broker = redis.Redis.from_url(celery_app.conf.broker_url)
    queue = celery_app.conf.task_default_queue
    quiet = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = broker.llen(queue) or broker.llen(queue + ".large") or state.active_requests or state.reserved_requests
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return
        time.sleep(0.1)
    raise AssertionError(f"the Celery worker was still busy {timeout:.0f} s after the test")


@pytest.fixture
def celery_worker(celery_app, celery_worker_session, transactional_db):
    yield celery_worker_session
    wait_until_the_worker_is_idle(celery_app)
