"""manage.py embedding_spaces: every subcommand ends with a key=value line; a refused switch exits with 2."""

from __future__ import annotations

import io
import json
import shlex

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from documents.management.commands.embedding_spaces import Command
from documents.models import Collection, Document, EmbeddingSpace, SpaceMigration
from documents.spaces import storage
from tests.documents.spaces.migrating import add_documents, migrating, space

pytestmark = pytest.mark.django_db


def run(*args: str) -> dict[str, str]:
    """The command's last line as a dict (values unquoted as a shell would)."""
    out = io.StringIO()
    call_command("embedding_spaces", *args, stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    return dict(part.split("=", 1) for part in shlex.split(last))


@pytest.fixture
def documents(user, collection):
    return add_documents(user, collection, count=20)


def test_add_creates_a_space_with_its_partition_and_list_shows_it(collection):
    added = run("add", "--name", "small", "--backend", "hashing", "--dimensions", "64")
    assert added == {
        "space": "small",
        "id": str(EmbeddingSpace.objects.get(name="small").pk),
        "backend": "hashing",
        "model": "hashing-64",
        "dimensions": "64",
        "status": "building",
    }
    assert storage.partition_exists(EmbeddingSpace.objects.get(name="small"))
    out = io.StringIO()
    call_command("embedding_spaces", "list", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("hashing-384 (default): hashing hashing-384, 384 dimensions, active")
    assert lines[1].startswith("small: hashing hashing-64, 64 dimensions, building, 0 vectors")
    assert lines[-1] == "spaces=2 default=hashing-384 active=1"
    with pytest.raises(CommandError, match="already exists"):
        run("add", "--name", "small", "--backend", "hashing", "--dimensions", "64")
    with pytest.raises(CommandError, match="invalid choice"):
        run("add", "--name", "x", "--backend", "word2vec")


def test_migrate_returns_at_once_and_status_reports_it(collection, documents):
    space("hashing-256", 256, index=False)
    started = run("migrate", "--collection", "Handbook", "--to", "hashing-256")
    migration = SpaceMigration.objects.get()
    assert started == {
        "collection": "Handbook",
        "migration": str(migration.pk),
        "source": "hashing-384",
        "target": "hashing-256",
        "state": "backfilling",
        "total": "20",
    }
    status = run("status", "--collection", str(collection.pk))  # by id
    assert list(status)[:4] == ["active", "target", "coverage", "state"]
    assert (status["active"], status["target"], status["coverage"], status["state"]) == (
        "hashing-384",
        "hashing-256",
        "0.0",
        "backfilling",
    )
    assert (status["done"], status["total"]) == ("0", "20")
    with pytest.raises(CommandError, match="No collection named 'Nope'"):
        run("status", "--collection", "Nope")
    with pytest.raises(CommandError, match="No embedding space named 'nope'"):
        run("migrate", "--collection", "Handbook", "--to", "nope")


def test_a_collection_name_shared_by_two_owners_needs_its_id(user, other_user, collection):
    Collection.objects.create(owner=other_user, name="Handbook")
    with pytest.raises(CommandError, match="Several collections are named 'Handbook'"):
        run("status", "--collection", "Handbook")
    assert run("status", "--collection", str(collection.pk))["active"] == "hashing-384"


def test_evaluate_prints_the_figures_unlabelled_and_labelled(collection, documents, tmp_path):
    migrating(collection, space("hashing-256", 256))
    figures = run("evaluate", "--collection", "Handbook", "--sample", "10")
    assert list(figures)[:4] == ["overlap_at_10", "recall_at_10", "ndcg_at_10_active", "ndcg_at_10_target"]
    assert figures["ndcg_at_10_active"] == "none" and figures["labelled"] == "false" and figures["queries"] == "10"
    assert float(figures["recall_at_10"]) >= 0.9
    for number, document in enumerate(documents):
        Document.objects.filter(pk=document.pk).update(external_id=f"d{number}")
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text(
        "".join(json.dumps({"_id": f"q{n}", "text": d.chunks.get().text[:80]}) + "\n" for n, d in enumerate(documents))
    )
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{n}\td{n}\t1\n" for n in range(len(documents))))
    figures = run("evaluate", "--collection", "Handbook", "--queries", str(queries), "--qrels", str(qrels))
    assert figures["labelled"] == "true" and float(figures["ndcg_at_10_target"]) >= 0.9
    assert SpaceMigration.objects.get().evaluation["labelled"] is True
    with pytest.raises(CommandError, match="both --queries and --qrels"):
        run("evaluate", "--collection", "Handbook", "--queries", str(queries))


def test_evaluate_without_a_migration_is_a_clear_error(collection):
    with pytest.raises(CommandError, match="no migration in progress"):
        run("evaluate", "--collection", "Handbook")


def test_a_refused_switch_exits_with_status_2_and_the_reason_on_stderr(collection, documents, capsys, monkeypatch):
    migrating(collection, space("hashing-256", 256))  # not evaluated: the gate refuses
    # As from the command line (manage.py's path: stderr and sys.exit), but keeping the test's connection open.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    with pytest.raises(SystemExit) as exit:
        Command().run_from_argv(["manage.py", "embedding_spaces", "switch", "--collection", "Handbook"])
    assert exit.value.code == 2
    assert "has not been evaluated" in capsys.readouterr().err
    collection.refresh_from_db()
    assert collection.active_space.name == "hashing-384"


def test_switch_after_a_passing_evaluation_then_rollback(collection, documents):
    migrating(collection, space("hashing-256", 256))
    run("evaluate", "--collection", "Handbook", "--sample", "10")
    switched = run("switch", "--collection", "Handbook")
    assert switched == {
        "collection": "Handbook",
        "active": "hashing-256",
        "previous": "hashing-384",
        "state": "switched",
        "forced": "false",
    }
    assert run("rollback", "--collection", "Handbook") == {
        "collection": "Handbook",
        "active": "hashing-384",
        "previous": "hashing-256",
    }


def test_force_switches_a_target_the_gate_refuses_and_says_so(collection, documents):
    migrating(collection, space("noise-256", 256), noise=True)
    # 20 queries on 20 chunks: noise finds each in its top 10 half the time, 18 of them almost never.
    run("evaluate", "--collection", "Handbook", "--sample", "20")
    with pytest.raises(CommandError, match="recall@10"):
        run("switch", "--collection", "Handbook")
    assert run("switch", "--collection", "Handbook", "--force")["forced"] == "true"
    assert SpaceMigration.objects.get().forced is True


@pytest.mark.django_db(transaction=True)
def test_retire_drops_an_unused_space_and_refuses_one_in_use(collection):
    unused = space("unused-64", 64)
    assert run("retire", "unused-64") == {"space": "unused-64", "status": "retired"}
    assert not storage.partition_exists(unused)
    with pytest.raises(CommandError, match="in use"):
        run("retire", collection.active_space.name)
