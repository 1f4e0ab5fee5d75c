"""chat/followups.py: a follow-up keeps its subject without a language model, through the service and the page."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from chat import followups, services
from chat.models import Conversation
from documents import search as retrieval
from documents.search import Hit
from tests.documents_factory import add_text_document as add

REPORT = (
    "Acme Corporation annual report. In 2023 the revenues of Acme Corporation were 12 million euros, "
    "up from 9 million in 2022. Revenues increased because widget sales grew in Asia."
)
# Says "increase" far more often than the report: asked alone, the follow-up finds this first.
NOVEL = (
    "Chapter one. The wind began to increase at dusk. Why did they increase the sails, the captain asked; "
    "the sailors did not know why they would increase anything. The storm would increase all night."
)
FIRST = "What were the revenues of Acme Corporation in 2023?"
FOLLOW_UP = "Why did they increase?"


@pytest.mark.parametrize("question", [
    "Why did they increase?", "Does it apply to contractors?", "What about Globex?", "And in 2022?",
    "why?", "Tell me more", "Which of those is the cheapest?", "How long is it valid?",
])
def test_short_questions_that_point_back_are_follow_ups(question):
    assert followups.is_follow_up(question)


@pytest.mark.parametrize("question", [
    "What were the revenues of Acme Corporation in 2023?", "How many vacation days?",
    "Is it true that the vaccine causes autism in children?",  # a pronoun, but a subject of its own
    "Do vacation days expire?", "", "???",
])
def test_questions_with_a_subject_of_their_own_are_not(question):
    assert not followups.is_follow_up(question)


def test_the_subject_is_the_last_question_that_stood_on_its_own():
    history = [
        {"role": "user", "content": FIRST}, {"role": "assistant", "content": "12 million euros [1]."},
        {"role": "user", "content": FOLLOW_UP}, {"role": "assistant", "content": "Widget sales [1]."},
    ]
    carried = followups.follow_up("And in 2022?", history)
    assert carried == followups.FollowUp(query=f"{FIRST} And in 2022?", subject=FIRST)
    assert followups.follow_up("How many vacation days do employees get?", history) is None
    assert followups.follow_up(FOLLOW_UP, []) is None  # nothing to follow


def hit(document_id: int, text: str) -> Hit:
    return Hit(chunk_id=document_id * 10, document_id=document_id, document_title=f"d{document_id}", page=None,
               heading="", text=text, score=1.0)


def test_passages_of_documents_without_the_subject_are_set_aside_but_not_all():
    report, novel, more = hit(1, REPORT), hit(2, NOVEL), hit(1, "Sales grew fastest in the second half.")
    assert followups.on_subject([novel, report, more], FIRST) == [report, more]  # its neighbour stays
    assert followups.on_subject([novel], FIRST) == [novel]  # nothing on the subject: keep what was found


def test_a_continuation_naming_what_no_passage_on_the_subject_holds_changes_the_subject():
    report = hit(1, REPORT)
    assert followups.changes_subject("What about Microsoft's founders?", [report])
    assert not followups.changes_subject("What about Acme's sales in Asia?", [report])  # a word of it is held
    assert not followups.changes_subject("Why did they fall?", [report])  # points back: the subject's by saying so
    assert not followups.changes_subject("And in 2019?", [report])  # the subject again, another year
    assert not followups.changes_subject("Tell me more", [report])  # names nothing


@pytest.fixture
def two_topics(user, collection, settings):
    settings.LLM_BACKEND = "extractive"
    return add(user, collection, "acme-report", REPORT), add(user, collection, "novel", NOVEL)


def cited_documents(done) -> set[int]:
    return {citation["document_id"] for citation in done["citations"]}


@pytest.mark.django_db
def test_without_a_language_model_a_follow_up_cites_the_first_topics_document(user, two_topics):
    report, novel = two_topics
    # Asked on its own, the follow-up is about the novel: the test could fail.
    assert retrieval.search(user=user, query=FOLLOW_UP, k=6)[0].document_id == novel.pk
    conversation = Conversation.objects.create(owner=user)
    first = list(services.ask(conversation=conversation, question=FIRST))[-1]
    assert cited_documents(first) == {report.pk}
    done = list(services.ask(conversation=conversation, question=FOLLOW_UP))[-1]
    assert done["error"] == "" and cited_documents(done) == {report.pk}
    assert "increased because widget sales grew" in done["content"]


@pytest.mark.django_db
def test_a_new_subject_after_a_follow_up_is_searched_as_asked(user, two_topics):
    report, novel = two_topics
    conversation = Conversation.objects.create(owner=user)
    for question in (FIRST, FOLLOW_UP):
        list(services.ask(conversation=conversation, question=question))
    done = list(services.ask(conversation=conversation, question="Why did the captain increase the sails at dusk?"))[-1]
    assert novel.pk in cited_documents(done)


@pytest.mark.django_db
def test_what_about_something_the_subjects_documents_never_name_is_searched_as_asked(user, collection, two_topics):
    """After a question on Acme's revenues, "What about Microsoft's founders?" carried the revenues along and kept
    only the passages of documents on them: it answered with Acme's report (found in a review, 2026-12-02)."""
    report, _ = two_topics
    founders = add(user, collection, "microsoft-history",
                   "Microsoft was founded by Bill Gates and Paul Allen on April 4, 1975, in Albuquerque.")
    conversation = Conversation.objects.create(owner=user)
    list(services.ask(conversation=conversation, question=FIRST))
    assert followups.is_follow_up("What about Microsoft's founders?")  # so the test could fail
    done = list(services.ask(conversation=conversation, question="What about Microsoft's founders?"))[-1]
    assert cited_documents(done) == {founders.pk} and "Bill Gates and Paul Allen" in done["content"]
    # A continuation on the subject keeps it: the report, not the history of Microsoft.
    done = list(services.ask(conversation=conversation, question="What about the sales in Asia?"))[-1]
    assert report.pk in cited_documents(done) and founders.pk not in cited_documents(done)


def events_of(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.mark.django_db
def test_on_the_chat_page_the_follow_up_keeps_its_subject(client, user, two_topics):
    report, _ = two_topics
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)
    url = reverse("chat:ask", args=[conversation.pk])
    events_of(client.post(url, {"question": FIRST}))
    done = events_of(client.post(url, {"question": FOLLOW_UP}))[-1]
    assert done["type"] == "done" and cited_documents(done) == {report.pk}
