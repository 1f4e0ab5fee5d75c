"""A property: whatever the users, collections, memberships, documents, moves of documents between
collections, members removed and question, everything search, chat answers, /v1/chat/completions, similar
documents, "more like this" passages and recommendations return comes from a collection the asker may read
(now: a history of documents read before a move or a removal never leaks them), and the BM25 statistics stay
those of a recomputation from scratch.
"""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import services
from core.models import ApiToken
from documents import pipeline
from documents import search as retrieval
from documents import services as document_services
from documents.models import Collection, Document, Interest
from documents.recommend import interest_record, recommendations_for
from documents.similar import similar_documents, similar_passages
from tests.term_statistics import assert_statistics_exact

pytestmark = pytest.mark.django_db

WORDS = ["budget", "salary", "vacation", "laptop", "travel", "hotel", "secret", "plan", "merger", "audit"]

world = st.fixed_dictionaries({
    "users": st.integers(min_value=2, max_value=4),
    # (owner index, member indexes) per collection
    "collections": st.lists(
        st.tuples(st.integers(0, 3), st.sets(st.integers(0, 3), max_size=3)), min_size=2, max_size=4
    ),
    # (collection index, words) per document
    "documents": st.lists(
        st.tuples(st.integers(0, 3), st.lists(st.sampled_from(WORDS), min_size=3, max_size=12)),
        min_size=1, max_size=6,
    ),
    # (document index, collection index, write path, tag) per move, after every document is stored
    "moves": st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from(["save", "update", "sql"]),
                  st.sampled_from(["", "hr", "legal"])),
        min_size=1, max_size=4,
    ),
    # (collection index, user index) memberships removed after the moves
    "removals": st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=3),
    "asker": st.integers(0, 3),
    "question": st.lists(st.sampled_from(WORDS + ["ignore", "previous", "instructions", "'; DROP"]),
                         min_size=1, max_size=5).map(" ".join),
})


def build(spec):
    users = [get_user_model().objects.create_user(f"u{i}") for i in range(spec["users"])]
    collections = []
    for number, (owner, members) in enumerate(spec["collections"]):
        collection = Collection.objects.create(name=f"c{number}", owner=users[owner % len(users)])
        collection.members.set(users[m % len(users)] for m in members)
        collections.append(collection)
    for number, (index, words) in enumerate(spec["documents"]):
        collection = collections[index % len(collections)]
        document = document_services.document_create(
            owner=collection.owner, collection=collection, enqueue=False,
            file=ContentFile((" ".join(words) + f" document {number}.").encode(), name=f"d{number}.txt"),
        )
        pipeline.document_ingest(document_id=document.pk)
    documents = list(Document.objects.order_by("pk"))
    asker = users[spec["asker"] % len(users)]
    # The asker read every document they could at the time (recommendations start from that history).
    interest_record(user=asker, kind=Interest.Kind.OPENED, document_ids=sorted(readable_documents(asker)))
    for index, to, path, tag in spec["moves"]:
        move(documents[index % len(documents)], collections[to % len(collections)], path,
             {"tags": [tag]} if tag else {})
    for collection, user in spec["removals"]:
        collections[collection % len(collections)].members.remove(users[user % len(users)])
    return asker


def move(document: Document, collection: Collection, path: str, metadata: dict) -> None:
    """Change a document's collection and metadata as the admin form (save), a bulk update or raw SQL does."""
    if path == "save":
        document.refresh_from_db()
        document.collection, document.metadata = collection, metadata
        document.save()
    elif path == "update":
        Document.objects.filter(pk=document.pk).update(collection=collection, metadata=metadata)
    else:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE documents_document SET collection_id = %s, metadata = %s::jsonb WHERE id = %s",
                           [collection.pk, json.dumps(metadata), document.pk])


def readable_documents(user) -> set[int]:
    """Computed independently of the code under test: owner or member, straight from the tables."""
    allowed = {c.pk for c in Collection.objects.all() if c.owner_id == user.pk or user in c.members.all()}
    return set(Document.objects.filter(collection_id__in=allowed).values_list("pk", flat=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=world)
def test_search_and_answers_only_return_readable_documents(spec, client, settings):
    settings.LLM_BACKEND = "extractive"
    with transaction.atomic():
        asker = build(spec)
        allowed = readable_documents(asker)
        assert_statistics_exact()
        for mode in retrieval.MODES:
            hits = retrieval.search(user=asker, query=spec["question"], k=20, mode=mode)
            assert {hit.document_id for hit in hits} <= allowed
        for event in services.answer(user=asker, question=spec["question"], history=[]):
            if event["type"] == "result":
                assert {hit.document_id for hit in event["hits"]} <= allowed
        raw = ApiToken.issue(user=asker)[1]
        response = client.post(
            "/v1/chat/completions", {"model": "rag", "messages": [{"role": "user", "content": spec["question"]}]},
            content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 200, response.content
        assert {c["document_id"] for c in response.json()["citations"]} <= allowed
        for document in Document.objects.all():  # readable or not: the SQL decides, not the caller
            assert {hit.document_id for hit in similar_documents(user=asker, document=document, k=50)} <= allowed
            for chunk in document.chunks.all()[:1]:
                assert {hit.document_id for hit in similar_passages(user=asker, chunk=chunk, k=50)} <= allowed
        assert {hit.document_id for hit in recommendations_for(user=asker, k=50)} <= allowed
        transaction.set_rollback(True)  # the next example starts from an empty database
