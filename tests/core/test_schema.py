"""core.schema: a migration that drops a foreign key's index does not stop the table's writes while it waits."""

from __future__ import annotations

import importlib
import threading

import psycopg
import pytest
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader

from core.schema import AlterFieldIndexConcurrently
from tests.conftest import wait_until_a_connection_waits_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("documents", "0016_document_vectors_per_space")


def chunk_document_indexes() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'documents_chunk' AND indexdef LIKE %s",
                       ["%(document_id)"])
        return [row[0] for row in cursor.fetchall()]


def run(operation, backwards: bool = False) -> None:
    before = MigrationLoader(connection).project_state(BEFORE)
    after = before.clone()
    operation.state_forwards("documents", after)
    with connection.schema_editor(atomic=False) as editor:
        if backwards:
            operation.database_backwards("documents", editor, after, before)
        else:
            operation.database_forwards("documents", editor, before, after)


def test_dropping_the_chunks_document_index_lets_writes_through_while_it_waits_for_a_reader():
    migration = importlib.import_module("documents.migrations.0017_redundant_indexes").Migration
    operation = migration.operations[0]
    assert migration.atomic is False and isinstance(operation, AlterFieldIndexConcurrently)
    run(operation, backwards=True)  # as before the migration: the foreign key's own index
    assert len(chunk_document_indexes()) == 1

    params = {**connection.get_connection_params(), "autocommit": True}
    with psycopg.connect(**params) as reader, psycopg.connect(**params) as writer:
        # A long transaction that has read the table (a search, a document being stored).
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM documents_chunk")
        failure: list[BaseException] = []

        def migrate() -> None:
            try:
                run(operation)
            except BaseException as error:  # noqa: BLE001 (reported by the test below)
                failure.append(error)
            finally:
                connections.close_all()

        dropping = threading.Thread(target=migrate)
        dropping.start()
        try:
            wait_until_a_connection_waits_for_a_lock("the drop")
            # What an INSERT takes: behind a plain DROP INDEX (queued for ACCESS EXCLUSIVE) it would wait.
            writer.execute("BEGIN")
            writer.execute("LOCK TABLE documents_chunk IN ROW EXCLUSIVE MODE NOWAIT")
            writer.execute("ROLLBACK")
            assert dropping.is_alive() and chunk_document_indexes()  # the drop still waits for the reader
        finally:
            reader.execute("COMMIT")
            dropping.join(30)
    assert not dropping.is_alive() and failure == []
    assert chunk_document_indexes() == []


def test_only_db_index_may_change():
    from django.db import models

    operation = AlterFieldIndexConcurrently(
        "chunk", "document", models.ForeignKey("documents.Document", models.PROTECT, related_name="chunks"))
    with pytest.raises(ValueError, match="only db_index may change"):
        run(operation)
