"""Recommended for you: an interest vector from what someone opened or asked about (time-decayed); cold start."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from chat import services as chat
from chat.models import Conversation
from core.models import ApiToken
from documents.models import Collection, EmbeddingSpace, Interest
from documents.recommend import interest_record, recommendations_for
from documents.spaces import storage
from tests.documents.topics import TOPICS, add_halves, half, ids
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(user, collection):
    return add_halves(user, collection)


def test_without_a_history_the_newest_documents_come_first(user, library):
    found = recommendations_for(user=user, k=3)
    newest = sorted((d for pair in library.values() for d in pair), key=lambda d: (d.created_at, d.pk))[::-1]
    assert ids(found) == [d.pk for d in newest[:3]]
    assert {hit.reason for hit in found} == {"recent"} and all(hit.score is None for hit in found)


def test_without_a_history_what_others_opened_comes_before_the_new(user, other_user, collection, library):
    collection.members.add(other_user)
    popular = library["chess"][0]
    interest_record(user=user, document_ids=[popular.pk], kind=Interest.Kind.OPENED)
    found = recommendations_for(user=other_user, k=3)
    assert found[0].document_id == popular.pk and found[0].reason == "popular"
    assert [hit.reason for hit in found[1:]] == ["recent", "recent"]


def test_opening_a_document_recommends_its_neighbours_not_itself(client, user, library):
    client.force_login(user)
    first, second = library["volcano"]
    assert client.get(reverse("documents:detail", args=[first.pk])).status_code == 200
    found = recommendations_for(user=user, k=5)
    assert found[0].document_id == second.pk and found[0].reason == "interest" and found[0].score > 0
    assert first.pk not in ids(found)


def test_recent_interest_outweighs_old_interest(user, library):
    interest_record(user=user, document_ids=[library["chess"][0].pk], kind=Interest.Kind.OPENED)
    Interest.objects.update(created_at=timezone.now() - datetime.timedelta(days=60))
    interest_record(user=user, document_ids=[library["bakery"][0].pk], kind=Interest.Kind.OPENED)
    assert recommendations_for(user=user, k=1)[0].document_id == library["bakery"][1].pk
    Interest.objects.filter(document=library["bakery"][0]).update(
        created_at=timezone.now() - datetime.timedelta(days=80)
    )
    assert recommendations_for(user=user, k=1)[0].document_id == library["chess"][1].pk


def test_a_question_notes_the_documents_that_answered_it(user, library):
    conversation = Conversation.objects.create(owner=user)
    list(chat.ask(conversation=conversation, question="sourdough flour yeast oven"))
    asked = set(Interest.objects.filter(user=user, kind=Interest.Kind.ASKED).values_list("document_id", flat=True))
    assert asked and asked <= {d.pk for d in library["bakery"]}
    assert recommendations_for(user=user, k=1)[0].reason == "interest"


@pytest.mark.parametrize("stream", [False, True])
def test_a_question_through_the_openai_compatible_api_is_noted_too(client, settings, user, library, stream):
    settings.LLM_BACKEND = "extractive"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}
    response = client.post(
        "/v1/chat/completions",
        {"model": "rag", "stream": stream, "messages": [{"role": "user", "content": "sourdough flour yeast oven"}]},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200
    if stream:
        b"".join(response.streaming_content)  # the answer is noted once it is complete
    asked = set(Interest.objects.filter(user=user, kind=Interest.Kind.ASKED).values_list("document_id", flat=True))
    assert asked and asked <= {d.pk for d in library["bakery"]}
    assert recommendations_for(user=user, k=1)[0].reason == "interest"


def test_recommendations_stay_inside_the_readable_collections(user, other_user, collection, library):
    theirs = Collection.objects.create(name="Mallory's", owner=other_user)
    private = add_text_document(other_user, theirs, "volcano-private", half("volcano", TOPICS["volcano"], 1) + " Mine.")
    interest_record(user=user, document_ids=[library["volcano"][0].pk], kind=Interest.Kind.OPENED)
    assert private.pk not in ids(recommendations_for(user=user, k=50))
    # Mallory was a member, opened Alice's volcano notes, and was removed: neither they nor their pull remain.
    collection.members.add(other_user)
    interest_record(user=other_user, document_ids=[library["volcano"][1].pk], kind=Interest.Kind.OPENED)
    collection.members.remove(other_user)
    found = recommendations_for(user=other_user, k=50)
    assert ids(found) == [private.pk] and found[0].reason == "recent"


def test_a_history_across_embedding_spaces_recommends_from_the_space_most_of_it_is_in(user, collection, library):
    """Only vectors of one space can be averaged or compared: the interest is in the space of most of the history."""
    space = EmbeddingSpace.objects.create(name="hashing-64", backend="hashing", model="hashing", dimensions=64)
    storage.create_partition(space)
    storage.create_index(space, "cosine")
    small = Collection.objects.create(name="Small model", owner=user, active_space=space)
    there = {
        topic: [
            add_text_document(user, small, f"{topic}-small-{side}", half(topic, TOPICS[topic], side)) for side in (0, 1)
        ]
        for topic in ("volcano", "glacier")
    }
    interest_record(
        user=user, document_ids=[library["chess"][0].pk, library["bakery"][0].pk], kind=Interest.Kind.OPENED
    )
    interest_record(user=user, document_ids=[there["volcano"][0].pk], kind=Interest.Kind.OPENED)
    picked = [hit for hit in recommendations_for(user=user, k=50) if hit.reason == "interest"]
    mine = {d.pk for pair in library.values() for d in pair}
    assert picked and {hit.document_id for hit in picked} <= mine
    assert picked[0].document_id in {library["chess"][1].pk, library["bakery"][1].pk}
    # Now most of it is in the small model's space: recommended from there only.
    interest_record(user=user, document_ids=[there["glacier"][0].pk], kind=Interest.Kind.OPENED)
    Interest.objects.filter(document_id__in=[library["bakery"][0].pk]).delete()
    picked = [hit for hit in recommendations_for(user=user, k=50) if hit.reason == "interest"]
    assert {hit.document_id for hit in picked} == {there["volcano"][1].pk, there["glacier"][1].pk}


def test_clearing_the_history_starts_afresh(client, user, library):
    client.force_login(user)
    client.get(reverse("documents:detail", args=[library["sailing"][0].pk]))
    page = client.get(reverse("documents:list")).content.decode()
    assert "Recommended for you" in page and "Clear my reading history" in page
    response = client.post(reverse("documents:forget_history"))
    assert response.status_code == 302 and not Interest.objects.filter(user=user).exists()
    assert {hit.reason for hit in recommendations_for(user=user, k=5)} == {"recent"}


def test_the_recommendations_api(client, user, library):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}
    interest_record(user=user, document_ids=[library["glacier"][0].pk], kind=Interest.Kind.OPENED)
    results = client.get("/api/v1/recommendations?k=2", **headers).json()["results"]
    second = library["glacier"][1]
    assert results[0] == {
        "document_id": second.pk,
        "title": second.title,
        "collection": "Handbook",
        "score": pytest.approx(results[0]["score"]),
        "reason": "interest",
    }
    assert len(results) == 2
    assert client.get("/api/v1/recommendations?k=0", **headers).status_code == 422
    assert client.delete("/api/v1/recommendations/history", **headers).json() == {"deleted": 1}
    assert {r["reason"] for r in client.get("/api/v1/recommendations", **headers).json()["results"]} == {"recent"}


def test_a_document_opened_again_soon_is_noted_once_and_old_signs_are_forgotten(client, user, library):
    client.force_login(user)
    first = library["chess"][0]
    for _ in range(3):
        client.get(reverse("documents:detail", args=[first.pk]))
    assert Interest.objects.filter(user=user, document=first).count() == 1
    Interest.objects.update(created_at=timezone.now() - datetime.timedelta(hours=2))
    client.get(reverse("documents:detail", args=[first.pk]))
    assert Interest.objects.filter(user=user, document=first).count() == 2
    Interest.objects.update(created_at=timezone.now() - datetime.timedelta(days=91))
    client.get(reverse("documents:detail", args=[library["bakery"][0].pk]))
    assert list(Interest.objects.filter(user=user).values_list("document_id", flat=True)) == [library["bakery"][0].pk]
