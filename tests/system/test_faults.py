"""Faults, with real processes really killed: nothing is lost, nothing is stored twice, nothing hangs.

(a) a Celery worker SIGKILLed in the middle of a long document: a new worker finishes it, one copy of its chunks;
(b) Redis stopped while documents wait in its queue (and restarted empty): they are all processed once it is back,
    and an upload during the outage is accepted, says it waits for the queue, and is processed too;
(c) PostgreSQL stopped with pg_ctl and started again: a clear 503 (JSON for the API, a page for people) during the
    outage, everything works right after, and the document that was being processed ends complete;
(d) an embedding provider answering 429, 500 or nothing at all: through a real worker, each document fails with a
    clear reason after a bounded number of retries, and the worker goes on.

(a) and (d) run `celery -A ragsite worker` subprocesses on this run's test database, with their own Redis server;
(b) and (c) run ragsite.launcher (`make run`) on a temporary RAG_VAR_DIR, with its own embedded PostgreSQL and its
own Redis server, against a loopback OpenAI-protocol server whose embeddings are slowed down to catch runs midway.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from django.core.files.base import ContentFile
from django.db import connection

from documents import chunking, pipeline, services
from documents.exceptions import EmbeddingError
from documents.models import Collection, Document
from documents.spaces import default_space
from ragsite.devservices import embedded_database_url, ensure_redis, redis_answers, stop_embedded_database, stop_redis
from tests.openai_server import running_openai_server

ROOT = Path(__file__).resolve().parents[2]
STALE_SECONDS = "6"  # INGEST_STALE_SECONDS of the processes started here: the sweeper acts within seconds
LONG_TEXT = "\n\n".join(f"Section {i}. The archive keeps every signed contract for ten years. " * 25
                        for i in range(16))


# ---------------------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    """The predicate's first true value; fails after ``timeout`` seconds (a bound on a hang, not a measure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:  # a server still starting
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A redis-server of our own (never the shared one): stopped, restarted and finally shut down here."""
    url = f"redis://127.0.0.1:{free_port()}"
    directory = tmp_path_factory.mktemp("redis")
    ensure_redis(f"{url}/0", directory)
    yield url, directory
    stop_redis(f"{url}/0")


def start_worker(name: str, env: dict, log: Path, *options: str) -> subprocess.Popen:
    """`celery -A ragsite worker` in its own process group, so that it can be killed whole (pool and beat)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ragsite", "worker", "--loglevel", "INFO", "--concurrency", "1",
         "--without-mingle", "--without-gossip", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", *options],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def this_runs_database_url() -> str:
    db = connection.settings_dict
    host = f"?host={db['HOST']}" if db["HOST"].startswith("/") else ""
    netloc = "" if host else f"{db['HOST']}:{db['PORT'] or 5432}"
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@{netloc}/{db['NAME']}{host}"


def worker_env(redis_url: str, server, settings, **extra: str) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": this_runs_database_url(),
        "REDIS_URL": redis_url,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "EMBEDDING_BACKEND": "openai", "EMBEDDING_MODEL": "text-embedding-3-small",
        "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test-key",
        "EMBEDDING_BATCH_SIZE": "2", "EMBEDDING_TIMEOUT_SECONDS": "10", "EMBEDDING_MAX_RETRIES": "0",
        "CELERY_VISIBILITY_TIMEOUT": "5", "INGEST_STALE_SECONDS": STALE_SECONDS,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


def on_the_workers_space(collection, server, settings) -> None:
    """The collection searches (and its documents are embedded in) the space of the workers' model (worker_env):
    a collection starts on the space configured when it was created, the tests' hashing one."""
    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "openai", "text-embedding-3-small"
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = server.url, "test-key"
    Collection.objects.filter(pk=collection.pk).update(active_space=default_space())


def send(redis_url: str, *document_ids: int) -> None:
    """Queue ingestions on that broker, as the web server does (by task name: a client of its own)."""
    # Not the current app: a new Celery() becomes current by default, and every shared task of this test
    # process (the uploads of later tests) would then be sent to this module's broker.
    client = Celery("faults", broker=redis_url, set_as_current=False)
    try:
        for document_id in document_ids:
            client.send_task("documents.tasks.ingest_document", args=[document_id])
    finally:
        client.close()


def fresh(document: Document) -> Document:
    return Document.objects.get(pk=document.pk)


def one_copy(document: Document, expected: int) -> None:
    ordinals = list(document.chunks.order_by("ordinal").values_list("ordinal", flat=True))
    assert ordinals == list(range(expected)) and document.chunk_count == expected, (ordinals, document.chunk_count)


# ---------------------------------------------------------------------------------------------------------------
# (a) a worker killed in the middle of a document


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("recovered_by", "visibility_timeout"), [
    ("the broker redelivering the unacknowledged task", "5"),
    ("the sweeper restarting the stale document", "3600"),  # the broker would wait an hour
])
def test_a_worker_killed_mid_document_is_replaced_and_the_document_ends_with_one_copy(
    own_redis, openai_server, settings, user, collection, tmp_path, recovered_by, visibility_timeout
):
    redis_url = f"{own_redis[0]}/{1 if visibility_timeout == '5' else 2}"
    openai_server.delay(0.2, times=10_000)  # every embedding batch takes 0.2 s: the run lasts seconds
    on_the_workers_space(collection, openai_server, settings)
    document = services.document_create(owner=user, collection=collection, filename="contracts.txt", enqueue=False,
                                      file=ContentFile(LONG_TEXT.encode(), name="contracts.txt"))
    with pipeline.local_copy(document) as path:
        expected = len(chunking.chunk_sections(pipeline.parse_document(document=document, path=path)))
    assert expected >= 30
    env = worker_env(redis_url, openai_server, settings, CELERY_VISIBILITY_TIMEOUT=visibility_timeout)
    first = start_worker("doomed", env, tmp_path / "worker-1.log", "-B", "--schedule", str(tmp_path / "beat-1"))
    second = None
    try:
        send(redis_url, document.pk)
        wait_for(lambda: (d := fresh(document)).progress >= 0.2 or d.is_finished, timeout=60,
                 what="the first worker to be well into it")
        os.killpg(first.pid, signal.SIGKILL)  # the worker, its pool process and its beat: no goodbye
        first.wait()
        killed = fresh(document)
        assert killed.status == Document.Status.PROCESSING and 0.2 <= killed.progress < 1
        assert killed.chunks.count() == 0 and killed.attempts == 1  # killed midway: nothing half stored

        second = start_worker("replacement", env, tmp_path / "worker-2.log", "-B", "--schedule",
                              str(tmp_path / "beat-2"))
        done = wait_for(lambda: (d := fresh(document)).is_finished and d, timeout=90,
                        what="the replacement worker to finish the document")
        assert done.status == Document.Status.READY, done.error
        one_copy(done, expected)
        assert done.attempts >= 2 and done.error == ""
        if visibility_timeout == "3600":
            assert "ingestion sweep: restarted=1" in (tmp_path / "worker-2.log").read_text()
    finally:
        stop(first)
        if second is not None:
            stop(second)


# ---------------------------------------------------------------------------------------------------------------
# (d) the embedding provider fails


@pytest.mark.django_db(transaction=True)
def test_an_embedding_provider_failing_ends_each_document_failed_with_its_reason_through_the_worker(
    own_redis, openai_server, settings, user, collection, tmp_path
):
    redis_url = f"{own_redis[0]}/3"
    # Each document's one batch is tried twice (EMBEDDING_MAX_RETRIES=1); the script answers in this order.
    openai_server.fail(429, times=2)
    openai_server.fail(500, times=2)
    openai_server.delay(3, times=2)  # longer than EMBEDDING_TIMEOUT_SECONDS
    on_the_workers_space(collection, openai_server, settings)
    documents = [
        services.document_create(owner=user, collection=collection, filename=f"{name}.txt", enqueue=False,
                               file=ContentFile(f"The {name} document about travel costs.".encode(), name=name))
        for name in ("rate-limited", "server-error", "silent", "fine")
    ]
    env = worker_env(redis_url, openai_server, settings, EMBEDDING_MAX_RETRIES="1", EMBEDDING_TIMEOUT_SECONDS="1")
    worker = start_worker("embeddings", env, tmp_path / "worker.log")
    try:
        send(redis_url, *(document.pk for document in documents))
        limited, broken, silent, fine = (
            wait_for(lambda d=document: (f := fresh(d)).is_finished and f, timeout=60, what=f"{document} to finish")
            for document in documents
        )
    finally:
        stop(worker)
    assert limited.status == broken.status == silent.status == Document.Status.FAILED
    assert limited.error == broken.error == silent.error == EmbeddingError.default_message
    assert limited.error_detail.startswith("The embedding service refused the request (HTTP 429: Rate limit reached")
    assert broken.error_detail.startswith("The embedding service refused the request (HTTP 500: The server had an")
    assert silent.error_detail == "The embedding service did not answer in time."
    assert fine.status == Document.Status.READY and fine.chunk_count == 1  # the worker went on
    assert len(openai_server.requests_to("/embeddings")) == 2 + 2 + 2 + 1  # retries are bounded
    assert all(d.chunks.count() == 0 for d in (limited, broken, silent))


# ---------------------------------------------------------------------------------------------------------------
# (b) and (c): `make run` (ragsite.launcher) on a temporary data folder, with its own Redis


class Site:
    """The launched site over HTTP: an API token and a signed-in browser session."""

    database_url: str  # set once the launcher's embedded server is up

    def __init__(self, base: str, var_dir: Path, redis_url: str, redis_dir: Path, server, log: Path):
        self.base, self.var_dir, self.redis_url, self.redis_dir, self.server, self.log = (
            base, var_dir, redis_url, redis_dir, server, log)
        self.token = ""
        self.browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                opener=None, timeout: float = 30) -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=timeout) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()

    def api(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        status, content_type, content = self.request(
            method, "/api/v1" + path, body, {"Authorization": f"Bearer {self.token}", **(headers or {})})
        assert content_type.startswith("application/json"), (status, content_type, content[:300])
        return status, json.loads(content or b"{}")

    def upload(self, name: str, text: str):
        boundary = "----faults" + uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n").encode()
        return self.api("POST", "/documents", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def document(self, document_id: int) -> dict:
        status, body = self.api("GET", f"/documents/{document_id}")
        assert status == 200, body
        return body

    def finished(self, document_id: int, timeout: float = 90) -> dict:
        try:
            return wait_for(lambda: (d := self.document(document_id))["status"] in ("ready", "failed", "cancelled")
                            and d, timeout=timeout, what=f"document {document_id} to finish")
        except AssertionError as error:  # what the site's processes said is the way to why
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-80:])
            raise AssertionError(f"{error}: {self.document(document_id)}\nthe launcher's log ends:\n{tail}") from None

    def sign_in(self, username: str, password: str) -> None:
        _, _, page = self.request("GET", "/accounts/login/", opener=self.browser)
        csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf})
        status, _, page = self.request("POST", "/accounts/login/", form.encode(), opener=self.browser,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and b"Documents" in page, page[:500]

    def page(self, path: str) -> tuple[int, str]:
        status, _, content = self.request("GET", path, opener=self.browser)
        return status, content.decode()

    def chunk_copies(self) -> dict[int, tuple[int, int, int]]:
        """Per document: (chunk_count, chunk rows, distinct ordinals), read from the database itself."""
        with psycopg.connect(self.database_url) as db:
            return {row[0]: row[1:] for row in db.execute(
                "SELECT d.id, d.chunk_count, count(c.id), count(DISTINCT c.ordinal) FROM documents_document d "
                "LEFT JOIN documents_chunk c ON c.document_id = d.id GROUP BY d.id")}

    def statuses(self) -> dict[str, str]:
        with psycopg.connect(self.database_url) as db:
            return dict(db.execute("SELECT original_filename, status FROM documents_document"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launched")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    ensure_redis(redis_url, tmp / "redis")  # ours: the launcher uses it and leaves it to us
    port = free_port()
    with running_openai_server() as server:
        env = {
            **os.environ,
            "RAG_VAR_DIR": str(tmp / "var"), "PORT": str(port), "REDIS_URL": redis_url,
            "ADMIN_PASSWORD": "faults-test-password", "WORKER_CONCURRENCY": "1",
            "EMBEDDING_BACKEND": "openai", "EMBEDDING_MODEL": "text-embedding-3-small",
            "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test-key", "EMBEDDING_BATCH_SIZE": "2",
            "INGEST_STALE_SECONDS": STALE_SECONDS, "CELERY_VISIBILITY_TIMEOUT": "10",
            # Uploads are not counted here: the limiter keeps its counters in Redis, which (b) stops.
            "RATE_LIMIT_UPLOAD": "", "PYTHONUNBUFFERED": "1",
        }
        for name in ("DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"):
            env.pop(name, None)
        log = tmp / "launcher.log"
        process = subprocess.Popen([sys.executable, "-m", "ragsite.launcher"], cwd=ROOT, env=env,
                                   stdout=log.open("w"), stderr=subprocess.STDOUT)
        site = Site(f"http://127.0.0.1:{port}", tmp / "var", redis_url, tmp / "redis", server, log)
        try:
            wait_for(lambda: (r := site.request("GET", "/healthz"))[0] == 200 and json.loads(r[2])["workers"] >= 1,
                     timeout=120, what="a healthy launched site with a live worker")
            site.database_url = embedded_database_url(site.var_dir)  # attaches to the launcher's server
            site.token = subprocess.run(
                [sys.executable, "manage.py", "create_api_token", "admin"], cwd=ROOT, env=env,
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            site.sign_in("admin", "faults-test-password")
            yield site
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            stop_embedded_database(tmp / "var")  # only if the launcher did not
            stop_redis(redis_url)


def test_redis_restarted_while_documents_are_queued_loses_nothing(site):
    site.server.delay(0.4, times=40)  # the first document keeps the single worker busy for a while
    status, first = site.upload("busy.txt", LONG_TEXT)
    assert status == 202, first
    wait_for(lambda: site.document(first["id"])["status"] == "processing", timeout=60, what="the worker to start")
    waiting = [site.upload(f"waiting-{i}.txt", f"Waiting document number {i} about ferries.")[1]["id"]
               for i in range(3)]
    assert {site.document(i)["status"] for i in waiting} == {"queued"}

    stop_redis(site.redis_url)  # no persistence: the queued tasks are gone with it
    assert not redis_answers(site.redis_url)
    status, during = site.upload("during-outage.txt", "Uploaded while Redis was down, about lighthouses.")
    assert status == 202, during  # accepted at once (the publish gives up quickly) ...
    kept = site.document(during["id"])
    assert kept["status"] == "queued" and "will start as soon as it is back" in kept["error"]  # ... and says so
    status, _, health = site.request("GET", "/healthz")
    assert status == 503 and json.loads(health)["redis"].startswith("error")

    ensure_redis(site.redis_url, site.redis_dir)  # back, empty
    documents = [first["id"], *waiting, during["id"]]
    finished = {i: site.finished(i) for i in documents}
    assert {d["status"] for d in finished.values()} == {"ready"}, finished
    copies = site.chunk_copies()
    for document_id, document in finished.items():
        assert copies[document_id] == (document["chunk_count"],) * 3, (document_id, copies[document_id])


def test_postgresql_restarted_gives_clear_503s_then_works_with_no_half_written_document(site):
    site.server.delay(0.4, times=40)
    status, interrupted = site.upload("interrupted.txt", LONG_TEXT.replace("contract", "invoice"))
    assert status == 202, interrupted
    wait_for(lambda: site.document(interrupted["id"])["progress"] >= 0.2, timeout=60, what="the ingestion to be midway")

    assert stop_embedded_database(site.var_dir)  # pg_ctl stop -m fast: every connection is cut
    status, body = site.api("GET", "/documents")
    assert status == 503 and body["detail"] == "The database is not reachable right now. Please try again in a moment."
    status, page = site.page("/documents/")
    assert status == 503 and "<h1>Service unavailable</h1>" in page and "database is not reachable" in page
    status, body = site.upload("during-db-outage.txt", "Uploaded while PostgreSQL was down.")
    assert status == 503 and "database is not reachable" in body["detail"]
    status, _, health = site.request("GET", "/healthz")
    assert status == 503 and json.loads(health)["database"].startswith("error")

    assert embedded_database_url(site.var_dir) == site.database_url  # started again, same socket
    for _ in range(5):  # the pool connects again at once (no minutes of reconnection backoff)
        status, body = site.api("GET", "/documents")
        assert status == 200, body
    # A restart between two requests: the pooled connections it broke are checked before use, never handed out.
    assert stop_embedded_database(site.var_dir)
    embedded_database_url(site.var_dir)
    for _ in range(3):
        status, body = site.api("GET", "/documents")
        assert status == 200, body
    status, page = site.page("/documents/")
    assert status == 200 and "interrupted" in page  # the session survived the restart

    done = site.finished(interrupted["id"])
    assert done["status"] == "ready", done
    copies = site.chunk_copies()
    assert copies[interrupted["id"]] == (done["chunk_count"],) * 3 and done["chunk_count"] > 30
    statuses = site.statuses()
    assert "during-db-outage.txt" not in statuses  # refused, not half created
    assert set(statuses.values()) == {"ready"}, statuses  # nothing left queued or processing
