"""The database health checks, on the real embedded PostgreSQL: the page (staff only), the command, the selectors."""

from __future__ import annotations

import io
import re

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from documents.spaces import default_space, storage
from ops import dbhealth
from ops.models import RecallSample

pytestmark = pytest.mark.django_db

URL = "/admin/db-health/"


def test_the_embedded_server_loads_pg_stat_statements_and_the_migration_created_it():
    assert dbhealth.pg_stat_statements_state() == "on"


def test_staff_see_the_page_with_the_top_statements(admin_client):
    with connection.cursor() as cursor:
        # This database's statistics start empty: a statement of an earlier test, slow on a loaded machine
        # (a 420 ms COPY once), would otherwise be the slowest.
        cursor.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                       "WHERE datname = current_database()), 0)")
        # pg_stat_statements replaces constants by $n: the alias names the statement on the page.
        cursor.execute("SELECT pg_sleep(0.3) AS dbhealth_marker_statement")
    response = admin_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "By total time" in page and "By mean time" in page
    assert 'http-equiv="refresh"' not in page  # reloads only while an index builds
    assert "dbhealth_marker_statement" in page  # among the slowest statements of this database, by mean time
    report = response.context["report"]
    assert report.statements.enabled and report.statements.by_total
    means = [statement.mean_ms for statement in report.statements.by_mean]
    assert means == sorted(means, reverse=True)
    # Among the slowest, not always the slowest: on a loaded machine the page's own read of pg_stat_statements
    # once took 330 ms.
    marker = next(s for s in report.statements.by_mean if "dbhealth_marker_statement" in s.query)
    assert marker.calls == 1 and marker.rows == 1
    assert marker.total_ms == marker.mean_ms >= 300
    assert marker.hit_ratio is None or 0 <= marker.hit_ratio <= 1


def test_the_admin_index_links_to_the_page(admin_client):
    assert f'href="{URL}"' in admin_client.get("/admin/").content.decode()


def test_staff_need_the_pages_own_permission(client, django_user_model):
    """The page shows running statements' text (which may hold what users typed or uploaded): not every staff
    member's to read (a review's finding). The admin's index links to it only for those who may."""
    from django.contrib.auth.models import Permission

    helpdesk = django_user_model.objects.create_user("helpdesk", "helpdesk@example.com", "x", is_staff=True)
    client.force_login(helpdesk)
    assert client.get(URL).status_code == 403
    assert f'href="{URL}"' not in client.get("/admin/").content.decode()
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_database_health"))
    client.force_login(django_user_model.objects.get(pk=helpdesk.pk))  # permissions read afresh
    assert client.get(URL).status_code == 200
    assert f'href="{URL}"' in client.get("/admin/").content.decode()


def test_a_signed_in_non_staff_user_is_sent_to_the_admin_sign_in(client, user):
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.logout()
    assert client.get(URL)["Location"].startswith("/admin/login/")


def test_without_the_extension_the_page_says_how_to_enable_it(admin_client):
    with connection.cursor() as cursor:
        cursor.execute("DROP EXTENSION pg_stat_statements")  # rolled back with the test's transaction
    response = admin_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Query statistics are off." in page and "CREATE EXTENSION pg_stat_statements" in page
    assert "By total time" not in page
    assert response.context["report"].status == dbhealth.WARN


@pytest.mark.parametrize("state", ["not_loaded", "unavailable"])
def test_every_missing_state_has_instructions(state):
    assert dbhealth.Statements(state=state).how_to_enable
    assert "shared_preload_libraries" in dbhealth.ENABLE_PG_STAT_STATEMENTS["not_loaded"]


@pytest.mark.django_db(transaction=True)
def test_the_page_flags_an_unused_a_duplicate_and_an_invalid_index(admin_client):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE dbhealth_probe (id serial PRIMARY KEY, a int, b int)")
        try:
            cursor.execute("INSERT INTO dbhealth_probe (a, b) SELECT g, 1 FROM generate_series(1, 50) g")
            cursor.execute("CREATE INDEX probe_a ON dbhealth_probe (a) WHERE b > 0")
            cursor.execute("CREATE INDEX probe_a_again ON dbhealth_probe (a) WHERE b > 0")
            cursor.execute("CREATE INDEX probe_a_other_predicate ON dbhealth_probe (a) WHERE b > 1")
            cursor.execute("CREATE INDEX probe_plain_id ON dbhealth_probe (id)")  # the primary key does this
            cursor.execute("CREATE INDEX probe_plain_a ON dbhealth_probe (a)")
            cursor.execute("CREATE UNIQUE INDEX probe_unique_a ON dbhealth_probe (a)")  # does what probe_plain_a does
            # probe_b_a serves every query probe_b does; not those of an index on b in another order, of a hash index,
            # or of one with a predicate of its own.
            cursor.execute("CREATE INDEX probe_b ON dbhealth_probe (b)")
            cursor.execute("CREATE INDEX probe_b_a ON dbhealth_probe (b, a)")
            cursor.execute("CREATE INDEX probe_b_descending ON dbhealth_probe (b DESC)")
            cursor.execute("CREATE INDEX probe_b_hash ON dbhealth_probe USING hash (b)")
            cursor.execute("CREATE INDEX probe_b_partial ON dbhealth_probe (b) WHERE a > 0")
            # Fails on the duplicate b values and leaves the index behind, INVALID.
            with pytest.raises(Exception, match="could not create unique index"):
                cursor.execute("CREATE UNIQUE INDEX CONCURRENTLY probe_b_unique ON dbhealth_probe (b)")

            response = admin_client.get(URL)
            found = response.context["report"].indexes
            assert [(i.table, i.index) for i in found.invalid] == [("dbhealth_probe", "probe_b_unique")]
            assert [(i.index, i.detail) for i in found.duplicate] == [
                ("probe_a_again", "probe_a"),
                ("probe_b", "probe_b_a (its leading columns)"),
                ("probe_plain_a", "probe_unique_a"),  # the plain one, though it is the older; alike before longer
                ("probe_plain_id", "dbhealth_probe_pkey"),
            ]
            assert not {i.index for i in found.framework_redundant} & {"probe_b", "probe_plain_a"}
            unused = {i.index for i in found.unused}
            assert {"probe_a", "probe_a_again", "probe_a_other_predicate"} <= unused
            assert "dbhealth_probe_pkey" not in unused and "probe_b_unique" not in unused
            page = response.content.decode()
            assert "probe_b_unique" in page and "probe_a_again" in page
            assert response.context["report"].status == dbhealth.ALERT

            # A scanned index is no longer unused.
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SELECT count(*) FROM dbhealth_probe WHERE a = 3 AND b > 1")
            cursor.execute("RESET enable_seqscan")
            _flush_statistics(cursor)
            assert "probe_a_other_predicate" not in {i.index for i in dbhealth.unused_indexes()}
        finally:
            cursor.execute("DROP TABLE dbhealth_probe")


def test_the_command_prints_the_checks_and_ends_with_key_value_pairs():
    out = io.StringIO()
    call_command("db_health", stdout=out)
    lines = out.getvalue().strip().splitlines()
    summary = dict(pair.split("=", 1) for pair in lines[-1].split())
    assert summary["status"] in ("ok", "warn")
    assert summary["pg_stat_statements"] == "on"
    assert summary["invalid_indexes"] == "0" and summary["duplicate_indexes"] == "0"
    assert summary["pgvector"] == dbhealth.pgvector().version
    assert int(summary["unused_indexes"]) == len(dbhealth.unused_indexes())
    assert "== Indexes" in out.getvalue() and "== pgvector" in out.getvalue()


def test_the_command_exits_1_on_an_alert_and_names_it(settings):
    space = default_space()
    RecallSample.objects.create(
        space=space, distance="cosine", queries=5, k=10, ef_search=100, mean=0.5, p10=0.2, minimum=0.1
    )
    settings.RECALL_FLOOR = 0.9
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("db_health", stdout=out)
    assert exit_.value.code == 1
    text = out.getvalue()
    assert f"ALERT: Recall of the {space.name} cosine HNSW index is 0.500, below 0.90." in text
    assert text.strip().splitlines()[-1].startswith("status=alert ")


@pytest.mark.parametrize(
    ("version", "missing"),
    [("0.8.1", 2), ("0.8.2", 1), ("0.8.3", 0), ("0.8.6", 0), ("0.7.4", 2), ("1.0.0", 0)],
)
def test_pgvector_versions_without_known_fixes_are_flagged(version, missing):
    assert len(dbhealth.missing_pgvector_fixes(version)) == missing


def test_vector_indexes_are_measured_against_shared_buffers():
    space = default_space()  # made with its partition and index on first use
    vector = dbhealth.pgvector()
    assert vector.version and not vector.missing_fixes  # the wheel's pgvector has both fixes
    names = {index.index for index in vector.indexes}
    assert storage.index_name(space, "cosine") in names  # each space's, on its partition
    assert vector.shared_buffers_bytes > 0
    assert all(index.fits_in_shared_buffers == (index.bytes <= vector.shared_buffers_bytes) for index in vector.indexes)


def test_a_session_idle_in_a_transaction_is_listed(settings, admin_client):
    settings.DB_HEALTH_IDLE_IN_TRANSACTION_SECONDS = 0
    with _connect("dbhealth-idle-probe") as other:
        other.execute("SELECT 1")  # psycopg opens a transaction and leaves it open: idle in transaction
        response = admin_client.get(URL)
        idle = response.context["report"].activity.idle_in_transaction
        # Listed server-wide: other sessions (another test process's, say) may be idle in a transaction too.
        assert "dbhealth-idle-probe" in [s.application for s in idle]
        assert "dbhealth-idle-probe" in response.content.decode()
        activity = response.context["report"].activity
        assert activity.connections.get("idle in transaction", 0) >= 1
        assert activity.replicas == []  # no streaming replica here: an empty table, not an error
        assert activity.table_hit_ratio is None or 0 <= activity.table_hit_ratio <= 1


def _flush_statistics(cursor) -> None:
    """Make this backend's counters visible now (they are flushed at most once a second otherwise)."""
    cursor.execute("SELECT pg_stat_force_next_flush()")
    cursor.execute("SELECT pg_stat_clear_snapshot()")


@pytest.mark.django_db(transaction=True)
def test_the_chunk_tables_dead_tuples_and_vacuum_are_reported(user, collection, admin_client):
    from tests.documents_factory import add_text_document

    add_text_document(user, collection, "notes", "First paragraph about tea.\n\nSecond about coffee.")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM documents_chunk")
        (rows,) = cursor.fetchone()
        cursor.execute("UPDATE documents_chunk SET heading = heading || ''")  # each row leaves a dead version
        _flush_statistics(cursor)
        before = dbhealth.chunk_table()
        assert before is not None and before.table == "documents_chunk"
        assert before.dead_tuples >= rows >= 1 and before.last_vacuum is None
        cursor.execute("VACUUM documents_chunk")
        _flush_statistics(cursor)
    after = dbhealth.chunk_table()
    assert after is not None and after.dead_tuples == 0 and after.last_vacuum is not None
    assert "Chunk table: " in admin_client.get(URL).content.decode()


def test_compose_loads_pg_stat_statements_in_the_db_service():
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    assert "shared_preload_libraries=pg_stat_statements" in compose["services"]["db"]["command"]


@pytest.mark.parametrize(
    ("output", "value"),
    [
        (
            " shared_preload_libraries \n--------------------------\n pg_stat_statements\n(1 row)\n\n",
            "pg_stat_statements",
        ),
        (" shared_preload_libraries \n--------------------------\n \n(1 row)\n", ""),
        (" count \n-------\n     0\n(1 row)\n", "0"),
    ],
)
def test_the_launcher_reads_psql_values(output, value):
    from ragsite.devservices import _psql_value

    assert _psql_value(output) == value


def _connect(application: str) -> psycopg.Connection:
    params = connection.get_connection_params()
    return psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}, application_name=application)


@pytest.mark.django_db(transaction=True)
def test_an_hnsw_build_in_progress_is_shown_live_and_its_index_is_not_an_alert(admin_client):
    import threading
    import time

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE dbhealth_vectors (id serial PRIMARY KEY, v vector(3))")
        cursor.execute(
            "INSERT INTO dbhealth_vectors (v) SELECT ARRAY[g, g * 2, 1]::vector FROM generate_series(1, 20) g"
        )
    writer = _connect("dbhealth-writer")
    builder = _connect("dbhealth-builder")
    builder.autocommit = True
    build = threading.Thread(
        target=builder.execute,
        args=("CREATE INDEX CONCURRENTLY dbhealth_vectors_hnsw ON dbhealth_vectors USING hnsw (v vector_l2_ops)",),
    )
    try:
        writer.execute("INSERT INTO dbhealth_vectors (v) VALUES ('[1,1,1]')")  # open: the build waits for it
        build.start()
        deadline = time.monotonic() + 60
        # The index is named once its catalog entry exists (the "initializing" phase has none yet).
        while not ((builds := dbhealth.index_builds()) and builds[0].index) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(b.table, b.index, b.command) for b in builds] == [
            ("dbhealth_vectors", "dbhealth_vectors_hnsw", "CREATE INDEX CONCURRENTLY")
        ]
        assert builds[0].phase.startswith("waiting for")
        response = admin_client.get(URL)
        report = response.context["report"]
        assert [(i.index, i.detail) for i in report.indexes.invalid] == [("dbhealth_vectors_hnsw", "being built")]
        assert report.status != dbhealth.ALERT  # a build is not a broken index
        assert "CREATE INDEX CONCURRENTLY" in response.content.decode()
        assert '<meta http-equiv="refresh" content="5">' in response.content.decode()  # follows the build
        writer.commit()
        build.join(timeout=60)
        assert not build.is_alive()
        assert dbhealth.index_builds() == [] and dbhealth.invalid_indexes() == []
        assert "dbhealth_vectors_hnsw" in {index.index for index in dbhealth.pgvector().indexes}
    finally:
        writer.rollback()
        if build.is_alive():
            build.join(timeout=60)  # before the DROP, which would deadlock with the build
        writer.close()
        builder.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE dbhealth_vectors")


@pytest.mark.django_db(transaction=True)
def test_a_long_running_statement_is_listed_and_warned_about(settings):
    import threading
    import time

    settings.DB_HEALTH_LONG_QUERY_SECONDS = 0
    sleeper = _connect("dbhealth-sleeper")
    pid = sleeper.info.backend_pid
    outcome: list[BaseException] = []

    def sleep() -> None:
        try:
            sleeper.execute("SELECT pg_sleep(60)")
        except psycopg.Error as error:
            outcome.append(error)

    slow = threading.Thread(target=sleep)
    slow.start()
    try:
        deadline = time.monotonic() + 30
        while not (running := [s for s in dbhealth.report().activity.long_running if s.pid == pid]):
            assert time.monotonic() < deadline, "the statement never showed as running"
            time.sleep(0.05)
        assert running[0].application == "dbhealth-sleeper" and "pg_sleep" in running[0].query
        # Counted server-wide: another test process's statement may be running too (the threshold here is 0 s).
        [warned] = [f.message for f in dbhealth.report().findings if "long-running statement" in f.message]
        assert re.fullmatch(r"[1-9]\d* long-running statement\(s\)\.", warned), warned
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [pid])
        slow.join(timeout=30)
        sleeper.close()
    assert [type(error) for error in outcome] == [psycopg.errors.QueryCanceled]  # ended by the test, not a minute


def test_a_vector_index_larger_than_shared_buffers_is_a_warning():
    big = dbhealth.VectorIndex(
        table="documents_chunk", index="big_hnsw", method="hnsw", bytes=2 << 30, fits_in_shared_buffers=False
    )
    vector = dbhealth.Pgvector(
        version="0.8.3", missing_fixes=[], shared_buffers_bytes=1 << 30, indexes=[big], builds=[]
    )
    empty = dbhealth.Indexes(unused=[], duplicate=[], framework_redundant=[], invalid=[])
    active = dbhealth.activity()
    found = dbhealth.findings(dbhealth.Statements(state="on"), empty, vector, active, [], 0.9)
    assert [(f.severity, f.message) for f in found] == [
        (dbhealth.WARN, "Vector index big_hnsw is larger than shared_buffers.")
    ]


def test_the_command_says_unreachable_and_exits_2_without_a_database():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing", "DEBUG": "true"}
    done = subprocess.run(
        [sys.executable, "manage.py", "db_health"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "status=unreachable"
    assert "The database is not reachable" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.django_db
def test_djangos_own_redundant_indexes_are_listed_apart_and_never_warned_about(admin_client):
    """auth_user_groups' user_id index leads its unique (user_id, group_id) constraint, as in every Django project:
    Django's migrations own it, so the page lists it apart, and neither the status nor the findings count it."""
    report = admin_client.get(URL).context["report"]
    framework = {(index.table, index.detail.split(" ")[0]) for index in report.indexes.framework_redundant}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'auth_user_groups'::regclass AND contype = 'u'"
        )
        (unique,) = cursor.fetchone()
    assert ("auth_user_groups", unique) in framework
    assert report.indexes.duplicate == []
    assert not any("auth_user_groups" in finding.message for finding in report.findings)
    assert "dbh-framework-redundant" in admin_client.get(URL).content.decode()
