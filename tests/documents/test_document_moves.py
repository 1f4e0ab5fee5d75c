"""A document's chunks follow it: moved to another collection or given new metadata, by any write path.

Chunks copy their document's collection (access control is a predicate on the chunk table) and
metadata (tag filters), and the BM25 statistics count chunks per collection. A trigger on the
documents table (migration 0005) keeps all of them in step, in the statement that changes the document.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.db.models import F
from django.urls import reverse

from chat.models import Conversation
from core.models import ApiToken
from documents import chunking, embeddings, parsing, pipeline, services, store
from documents import search as retrieval
from documents.models import Chunk, ChunkVector, Collection, Document, EmbeddingSpace, TermStat
from tests.term_statistics import assert_statistics_exact

pytestmark = pytest.mark.django_db

SECRET = "The merger with Initech closes in March; the price stays confidential."


@pytest.fixture
def people(django_user_model):
    return {name: django_user_model.objects.create_user(name) for name in ("alice", "bob", "carol")}


@pytest.fixture
def shared(people):
    """Alice's collection A, shared with Bob."""
    collection = Collection.objects.create(name="Team", owner=people["alice"])
    collection.members.add(people["bob"])
    return collection


@pytest.fixture
def private(people):
    """Carol's collection B, shared with nobody; its vectors are compared by another distance."""
    return Collection.objects.create(name="Board", owner=people["carol"], distance="l2")


@pytest.fixture
def memo(people, shared):
    document = services.document_create(
        owner=people["alice"], collection=shared, enqueue=False, metadata={"tags": ["deal"]},
        file=ContentFile(SECRET.encode(), name="merger.txt"),
    )
    return pipeline.document_ingest(document_id=document.pk)


@pytest.fixture
def llm(llm):
    """Both chat endpoints answer through the loopback OpenAI server, which records every prompt."""
    llm.reply_text = "It closes in March [1]."
    return llm


def admin_change(admin_client, document: Document, **changes) -> None:
    """Post Django admin's change form of ``document`` with ``changes`` (the file stays as it is)."""
    data = {"collection": document.collection_id, "title": document.title, "external_id": document.external_id,
            "metadata": json.dumps(document.metadata)}
    data.update(changes)
    response = admin_client.post(reverse("admin:documents_document_change", args=[document.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]


def events_of(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[len("data: "):]) for block in body.split("\n\n") for line in block.split("\n")
            if line.startswith("data: ")]


def seen_by(client, llm, user, question="When does the merger with Initech close?") -> dict[str, bool]:
    """Whether each way in finds the memo's passage for ``user``: search API, chat page, OpenAI API, prompt."""
    raw = ApiToken.issue(user=user)[1]
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    llm.chat_messages.clear()
    found = {}
    response = client.get("/api/v1/search", {"q": question, "k": 50}, **bearer)
    assert response.status_code == 200
    found["search"] = any("Initech" in result["text"] for result in response.json()["results"])
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)  # no collection: everything the user may read
    response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": question})
    done = events_of(response)[-1]
    assert done["type"] == "done", done
    cited = {citation["chunk_id"] for citation in done["citations"]}
    found["chat page"] = Chunk.objects.filter(pk__in=cited, text__contains="Initech").exists()
    response = client.post(
        "/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": question}]},
        content_type="application/json", **bearer,
    )
    assert response.status_code == 200, response.content
    cited = {citation["chunk_id"] for citation in response.json()["citations"]}
    found["chat completions"] = Chunk.objects.filter(pk__in=cited, text__contains="Initech").exists()
    found["prompt"] = any("Initech" in str(message.get("content")) for request in llm.chat_messages
                          for message in request)
    client.logout()
    return found


EVERYWHERE = {"search": True, "chat page": True, "chat completions": True, "prompt": True}
NOWHERE = dict.fromkeys(EVERYWHERE, False)


def chunks_match_their_documents() -> None:
    """Chunks copy their document's collection and metadata; their vectors copy the chunk's collection and
    document and the collection's distance (migrations 0005, 0008, 0015)."""
    assert not Chunk.objects.exclude(collection_id=F("document__collection_id")).exists()
    for chunk in Chunk.objects.select_related("document__collection"):
        assert chunk.metadata == chunk.document.metadata
    assert ChunkVector.objects.count() >= Chunk.objects.count() > 0
    for vector in ChunkVector.objects.select_related("chunk__document__collection"):
        document = vector.chunk.document
        assert (vector.collection_id, vector.document_id, vector.distance) == (
            document.collection_id, document.pk, document.collection.distance
        )


def test_an_admin_move_to_a_private_collection_hides_the_document_from_the_old_members(
    client, admin_client, llm, people, shared, private, memo,
):
    assert seen_by(client, llm, people["bob"]) == EVERYWHERE  # the checks can see it
    assert seen_by(client, llm, people["carol"]) == NOWHERE

    admin_change(admin_client, memo, collection=private.pk)

    assert seen_by(client, llm, people["bob"]) == NOWHERE
    assert seen_by(client, llm, people["alice"]) == NOWHERE  # A's owner is not B's reader either
    assert seen_by(client, llm, people["carol"]) == EVERYWHERE
    hits = retrieval.search(user=people["carol"], query="Initech merger", k=5, mode="vector")
    assert hits and hits[0].document_id == memo.pk  # found in B's own (L2) index
    chunks_match_their_documents()
    assert_statistics_exact()


def test_an_admin_metadata_edit_moves_the_tag_filters(client, admin_client, people, shared, memo, settings):
    settings.LLM_BACKEND = "extractive"

    def cited_with_tag(tag: str) -> bool:
        filters = retrieval.Filters(metadata={"tags": [tag]})
        return any(hit.document_id == memo.pk
                   for hit in retrieval.search(user=people["bob"], query="merger Initech", filters=filters))

    assert cited_with_tag("deal") and not cited_with_tag("archive")
    admin_change(admin_client, memo, metadata=json.dumps({"tags": ["archive"], "year": 2026}))
    assert not cited_with_tag("deal") and cited_with_tag("archive")
    assert {tuple(chunk.metadata["tags"]) for chunk in memo.chunks.all()} == {("archive",)}
    # The chat page's tag filter reads the same copy.
    client.force_login(people["bob"])
    conversation = Conversation.objects.create(owner=people["bob"], collection=shared)
    for tag, expected in (("deal", set()), ("archive", {memo.pk})):
        response = client.post(reverse("chat:ask", args=[conversation.pk]), {"question": "merger Initech", "tag": tag})
        done = events_of(response)[-1]
        assert {citation["document_id"] for citation in done["citations"]} == expected
    chunks_match_their_documents()


def move_by_save(document, collection, metadata):
    document.collection, document.metadata = collection, metadata
    document.save()


def move_by_queryset_update(document, collection, metadata):
    Document.objects.filter(pk=document.pk).update(collection=collection, metadata=metadata)


def move_by_raw_sql(document, collection, metadata):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE documents_document SET collection_id = %s, metadata = %s::jsonb WHERE id = %s",
                       [collection.pk, json.dumps(metadata), document.pk])


@pytest.mark.parametrize("move", [move_by_save, move_by_queryset_update, move_by_raw_sql])
def test_every_write_path_moves_the_chunks_and_the_statistics(move, people, shared, private, memo):
    other = pipeline.document_ingest(document_id=services.document_create(
        owner=people["alice"], collection=shared, enqueue=False,
        file=ContentFile(b"The merger party is on Friday. " * 40, name="party.txt"),
    ).pk)
    assert_statistics_exact()
    before = {c.pk: c.chunk_total for c in Collection.objects.all()}
    move(memo, private, {"tags": ["board"]})
    assert set(Chunk.objects.filter(document=memo).values_list("collection_id", flat=True)) == {private.pk}
    assert set(Chunk.objects.filter(document=other).values_list("collection_id", flat=True)) == {shared.pk}
    chunks_match_their_documents()
    assert_statistics_exact()
    shared.refresh_from_db()
    private.refresh_from_db()
    assert shared.chunk_total == before[shared.pk] - memo.chunk_count
    assert private.chunk_total == before[private.pk] + memo.chunk_count
    assert TermStat.objects.get(collection=private, lexeme="initech").df == 1
    assert TermStat.objects.get(collection=shared, lexeme="initech").df == 0
    # And back again.
    move(memo, shared, {})
    chunks_match_their_documents()
    assert_statistics_exact()


def test_a_bulk_move_of_many_documents_keeps_the_statistics_exact(people, shared, private, memo):
    for number in range(5):
        pipeline.document_ingest(document_id=services.document_create(
            owner=people["alice"], collection=shared if number % 2 else private, enqueue=False,
            file=ContentFile(f"Memo {number} about budgets and the merger.".encode(), name=f"m{number}.txt"),
        ).pk)
    # Every document changes sides in one statement: A's go to B and B's to A.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE documents_document SET collection_id = CASE collection_id WHEN %s THEN %s ELSE %s END",
                       [shared.pk, private.pk, shared.pk])
    chunks_match_their_documents()
    assert_statistics_exact()


def test_a_store_after_a_metadata_edit_copies_the_new_metadata(people, shared, memo):
    """The worker read the document before the edit; the chunks it stores still carry the edited metadata."""
    stale = Document.objects.get(pk=memo.pk)
    Document.objects.filter(pk=memo.pk).update(metadata={"tags": ["edited"]})
    drafts = chunking.chunk_sections([parsing.Section(text=SECRET)])
    backend = embeddings.get_backend()
    vectors = backend.embed_documents([draft.embedding_text for draft in drafts])
    store.store_chunks(document=stale, drafts=drafts, vectors=vectors)
    assert {tuple(chunk.metadata["tags"]) for chunk in memo.chunks.all()} == {("edited",)}


@pytest.mark.django_db(transaction=True)
def test_a_move_during_a_store_waits_for_it_and_then_moves_what_it_stored(people, shared, private, memo):
    import threading

    from django.db import connections

    from tests.conftest import wait_until_a_connection_waits_for_a_lock

    drafts = chunking.chunk_sections([parsing.Section(text=SECRET + " Stored again. " * 200)])
    backend = embeddings.get_backend()
    vectors = backend.embed_documents([draft.embedding_text for draft in drafts])
    errors = []

    def admin_moves_it():
        try:
            Document.objects.filter(pk=memo.pk).update(collection=private)
        except Exception as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    mover = threading.Thread(target=admin_moves_it)

    def while_the_store_holds_the_row():
        mover.start()
        wait_until_a_connection_waits_for_a_lock("the move")

    store.store_chunks(document=memo, drafts=drafts, vectors=vectors, on_stored=while_the_store_holds_the_row)
    mover.join(timeout=60)
    assert not errors
    stored = list(Chunk.objects.filter(document=memo).values_list("collection_id", flat=True))
    assert len(drafts) > 1 and stored == [private.pk] * len(drafts)
    chunks_match_their_documents()
    assert_statistics_exact()


def test_a_move_into_a_collection_holding_the_same_file_is_refused_with_a_message(admin_client, people, private, memo):
    twin = services.document_create(owner=people["carol"], collection=private, enqueue=False,
                                  file=ContentFile(SECRET.encode(), name="copy.txt"))
    response = admin_client.post(reverse("admin:documents_document_change", args=[memo.pk]), {
        "collection": private.pk, "title": memo.title, "external_id": "", "metadata": "{}",
    })
    assert response.status_code == 200
    assert f"This file is already in the collection “Board” as “{twin.title}”;" in response.content.decode()
    memo.refresh_from_db()
    assert memo.collection_id != private.pk
    chunks_match_their_documents()


@pytest.mark.django_db(transaction=True)
def test_the_migration_mends_chunks_left_behind_before_it(people, shared, private, memo):
    from django.core.management import call_command

    call_command("migrate", "documents", "0004", verbosity=0)  # the triggers of 0005 are gone
    try:
        Document.objects.filter(pk=memo.pk).update(collection=private, metadata={"tags": ["moved"]})
        assert set(memo.chunks.values_list("collection_id", flat=True)) == {shared.pk}  # the leak, as it was
    finally:
        call_command("migrate", verbosity=0)  # every app: going back unapplied those that depend on documents
    assert set(memo.chunks.values_list("collection_id", flat=True)) == {private.pk}
    chunks_match_their_documents()
    assert_statistics_exact()


def test_a_move_to_a_collection_on_another_embedding_space_queues_the_document_again(
    admin_client, people, shared, memo,
):
    """Vectors are only comparable within one space: moved where another space is searched, the document is
    ingested again (and the admin says so); moved between collections of one space, it is not."""
    from documents.spaces import storage

    other = EmbeddingSpace.objects.create(name="hashing-384-other", backend="hashing", model="hashing-384",
                                          fingerprint="other", dimensions=384)
    storage.create_partition(other)
    storage.create_index(other, "cosine")
    same = Collection.objects.create(name="Same space", owner=people["alice"])
    admin_change(admin_client, memo, collection=same.pk)
    memo.refresh_from_db()
    assert memo.status == Document.Status.READY  # its vectors fit: nothing to do
    elsewhere = Collection.objects.create(name="Elsewhere", owner=people["alice"], active_space=other)
    admin_change(admin_client, memo, collection=elsewhere.pk)
    page = admin_client.get(reverse("admin:documents_document_changelist")).content.decode()
    assert "is being ingested again" in page
    memo.refresh_from_db()
    assert memo.status == Document.Status.QUEUED
    assert retrieval.search(user=people["alice"], query="Initech merger", k=5, mode="vector") == []
    pipeline.document_ingest(document_id=memo.pk)
    assert ChunkVector.objects.filter(document_id=memo.pk, space=other).count() == memo.chunks.count() > 0
    hits = retrieval.search(user=people["alice"], query="Initech merger", k=5, mode="vector")
    assert hits and hits[0].document_id == memo.pk
