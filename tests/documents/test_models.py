import pytest

from core.models import ApiToken, hash_token
from documents.models import Collection, Document

pytestmark = pytest.mark.django_db


def make_document(owner, collection, title="Doc", sha="0" * 64):
    return Document.objects.create(owner=owner, collection=collection, title=title, sha256=sha, file="x")


def test_visible_to_covers_owned_and_shared_collections_only(user, other_user, django_user_model):
    mine = Collection.objects.create(name="Mine", owner=user)
    shared = Collection.objects.create(name="Shared with alice", owner=other_user)
    shared.members.add(user)
    private = Collection.objects.create(name="Private", owner=other_user)
    make_document(user, mine, sha="1" * 64)
    make_document(other_user, shared, sha="2" * 64)
    hidden = make_document(other_user, private, sha="3" * 64)

    assert set(Collection.objects.visible_to(user)) == {mine, shared}
    visible = Document.objects.visible_to(user)
    assert visible.count() == 2 and hidden not in visible
    assert Document.objects.visible_to(other_user).count() == 2


def test_same_file_twice_in_a_collection_is_refused_by_the_database(user, collection):
    from django.db import IntegrityError

    make_document(user, collection, sha="a" * 64)
    with pytest.raises(IntegrityError):
        make_document(user, collection, sha="a" * 64)


def test_api_tokens_are_stored_hashed(user):
    token, raw = ApiToken.issue(user=user, name="ci")
    assert raw.startswith("rag_") and len(raw) > 40
    token.refresh_from_db()
    assert token.key_hash == hash_token(raw) and raw not in token.key_hash
    assert ApiToken.objects.active().filter(key_hash=hash_token(raw)).exists()


def test_vector_extension_is_installed():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        version = cursor.fetchone()[0]
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 8)


def test_chunk_table_has_its_gin_index_and_the_spaces_partitions_their_hnsw_indexes():
    from django.db import connection

    from documents.spaces import default_space, storage

    space = default_space()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'documents_chunk'")
        definitions = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [storage.partition_name(space)])
        vectors = " ".join(row[0] for row in cursor.fetchall())
    assert "USING gin (search_vector)" in definitions and "hnsw" not in definitions
    assert "USING hnsw (((embedding)::vector(384)) vector_cosine_ops)" in vectors


def test_no_index_of_the_apps_tables_is_the_leading_part_of_another():
    """Every index costs each write: one whose columns begin another btree index of the same table (the foreign-key
    index Django adds beside a unique constraint that starts with the same key) serves nothing the longer one does not
    (documents 0017 and 0018, chat 0003 dropped the eight there were). The database health page's check finds them
    (ops.dbhealth, tested on indexes made for it in tests/ops)."""
    from ops.dbhealth import duplicate_indexes, project_apps

    tables = {model._meta.db_table for config in project_apps() for model in config.get_models()}
    assert {"documents_chunk", "documents_termstat", "chat_citation"} <= tables
    assert not any(table.startswith("auth_") for table in tables)
    assert [(index.table, index.index, index.detail) for index in duplicate_indexes()] == []
