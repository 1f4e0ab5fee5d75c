"""chat/citations.py and its endpoints: citations numbered in order of use, labelled by where the passage is,
the passage panel (access-checked), a stopped answer kept, and regenerate replacing the last answer."""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from chat import citations, services
from chat.models import Citation, Conversation, Message
from documents import pipeline
from documents import services as document_services
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db

TEXTS = {
    "vacation": "Employees receive twenty-five vacation days per year. Unused vacation days expire in March.",
    "security": "Laptops must use full disk encryption. The screen locks after five minutes without input.",
    "kitchen": "The office kitchen is cleaned every Friday afternoon by the facilities team.",
}


# --- numbering, without a database ---------------------------------------------------------------------------


def test_numbers_follow_the_order_of_first_use_and_unknown_passages_keep_theirs():
    numbering = citations.Numbering(available=5)
    text = numbering.rewrite("A [5]. B [2][5]. C [3, 5]. D [9] [0]. E [2, 9].")
    assert text == "A [1]. B [2][1]. C [3, 1]. D [9] [0]. E [2, 9]."
    assert numbering.cited == [5, 2, 3]


@pytest.mark.parametrize("pieces", [
    ["See [4", "] and [", "2,", " 4]."],
    ["See [", "4] and [2", ", 4", "]."],
    ["See [4] and [2, 4]."],
    list("See [4] and [2, 4]."),
])
def test_a_marker_split_across_streamed_pieces_is_renumbered_whole(pieces):
    numbering = citations.StreamNumbering(available=6)
    streamed = "".join(numbering.feed(piece) for piece in pieces) + numbering.flush()
    assert streamed == "See [1] and [2, 1]."


def test_a_bracket_that_is_no_marker_is_released_when_it_ends():
    numbering = citations.StreamNumbering(available=3)
    assert numbering.feed("Array a[") == "Array a"
    assert numbering.feed("i] and [") == "[i] and "
    assert numbering.flush() == "["


def test_labels_say_page_then_heading_path_then_place():
    assert citations.label(title="Policy", page=4, heading="A > B", passage=2, passages=9) == "Policy, page 4"
    assert citations.label(title="Guide", page=None, heading="Travel > Trains ", passage=2, passages=9) == (
        "Guide › Travel › Trains"
    )
    assert citations.label(title="notes", page=None, heading="", passage=3, passages=12) == "notes, passage 3 of 12"
    assert citations.label(title="notes", page=None, heading="", passage=None, passages=None) == "notes"


def test_a_label_never_doubles_the_punctuation_a_title_ends_with():
    title = "Effect of physical activity on cognitive function: a randomized trial."
    assert citations.label(title=title, page=None, heading="", passage=1, passages=4) == (
        "Effect of physical activity on cognitive function: a randomized trial, passage 1 of 4"
    )
    assert citations.label(title=title, page=3, heading="", passage=1, passages=4).endswith("randomized trial, page 3")
    assert citations.label(title=title, page=None, heading="Methods", passage=1, passages=4).endswith("trial › Methods")
    assert citations.label(title="Does it work?", page=3, heading="", passage=1, passages=4) == "Does it work? (page 3)"


def test_labels_within_one_answer_are_distinct_and_say_which_passage():
    def cite(index: int, heading: str, passage: int, page: int | None = None) -> Citation:
        return Citation(index=index, title="good-wikipedia", page=page, heading=heading, passage=passage, passages=98)

    founding = "History > 1972–1985: Founding"
    answer = [cite(1, founding, 19), cite(2, "History > 1985–1994: Windows", 21), cite(3, founding, 21),
              cite(4, founding, 20), cite(5, "", 7, page=2), cite(6, "", 9, page=2)]
    assert citations.labels(answer) == [
        "good-wikipedia › History › 1972–1985: Founding, passage 19 of 98",
        "good-wikipedia › History › 1985–1994: Windows",
        "good-wikipedia › History › 1972–1985: Founding, passage 21 of 98",
        "good-wikipedia › History › 1972–1985: Founding, passage 20 of 98",
        "good-wikipedia, page 2, passage 7 of 98",
        "good-wikipedia, page 2, passage 9 of 98",
    ]


# --- saved answers ------------------------------------------------------------------------------------------


@pytest.fixture
def library(user, collection):
    return {name: add(user, collection, name, text) for name, text in TEXTS.items()}


@pytest.fixture
def conversation(user):
    return Conversation.objects.create(owner=user)


def test_the_answer_its_events_and_its_saved_citations_number_passages_in_order_of_use(llm, conversation, library):
    llm.reply_text = "Laptops are encrypted [2]. Vacation: twenty-five days [1]. Both [1, 2]."
    events = list(services.ask(conversation=conversation, question="vacation days and laptop encryption"))
    prompt = llm.last_messages[-1]["content"]
    assert prompt.index(TEXTS["vacation"][:30]) < prompt.index(TEXTS["security"][:30])  # passage 1 is vacation

    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    done = events[-1]
    expected = "Laptops are encrypted [1]. Vacation: twenty-five days [2]. Both [2, 1]."
    assert streamed == done["content"] == expected
    assert [(c["index"], c["document_id"]) for c in done["citations"]] == [
        (1, library["security"].pk), (2, library["vacation"].pk),
    ]
    answer = Message.objects.get(pk=done["message_id"])
    assert answer.content == expected  # a reload shows the same numbers
    assert [(c.index, c.document_id) for c in answer.citation_set.order_by("index")] == [
        (1, library["security"].pk), (2, library["vacation"].pk),
    ]


def test_a_citation_is_labelled_by_its_place_when_its_document_has_neither_pages_nor_headings(
    llm, conversation, library
):
    llm.reply_text = "Twenty-five days [1]."
    done = list(services.ask(conversation=conversation, question="How many vacation days do employees get?"))[-1]
    [citation] = done["citations"]
    assert citation["label"] == "vacation, passage 1 of 1"
    saved = Citation.objects.get()
    assert (saved.passage, saved.passages, saved.heading) == (1, 1, "")


def test_a_markdown_documents_citation_is_labelled_by_its_heading_path(llm, user, collection, conversation):
    text = "# Handbook\n\n## Travel\n\nEmployees book trains for trips under four hours.\n"
    document = document_services.document_create(owner=user, collection=collection, enqueue=False,
                                                 file=ContentFile(text.encode(), name="handbook.md"))
    pipeline.document_ingest(document_id=document.pk)
    llm.reply_text = "By train [1]."
    done = list(services.ask(conversation=conversation, question="Which trips go by train?"))[-1]
    assert done["citations"][0]["label"] == "handbook › Handbook › Travel"


def test_passages_of_one_section_cited_together_get_distinct_labels_streamed_and_on_the_page(
    llm, client, user, collection, conversation
):
    sentence = "Sentence {} of the founding story tells how the company began in Albuquerque."
    body = " ".join(sentence.format(n) for n in range(60))
    text = f"# Microsoft\n\n## Founding\n\n{body}\n"
    document = document_services.document_create(owner=user, collection=collection, enqueue=False,
                                                 file=ContentFile(text.encode(), name="wiki.md"))
    pipeline.document_ingest(document_id=document.pk)
    assert document.chunks.count() >= 3
    llm.reply_text = "It began in Albuquerque [1], [2], [3]."
    question = "What does the founding story say about the company in Albuquerque?"
    done = list(services.ask(conversation=conversation, question=question))[-1]
    streamed = [c["label"] for c in done["citations"]]
    assert len(streamed) == 3 and len(set(streamed)) == 3
    assert all(label.startswith("wiki › Microsoft › Founding, passage ") for label in streamed)

    client.force_login(user)
    page = client.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    assert all(f">{label}</a>" in page for label in streamed)  # a reload shows the same labels


def test_a_stopped_answer_keeps_what_had_arrived_with_its_citations_marked_stopped(llm, conversation, library):
    llm.reply_text = "Laptops are encrypted [2]. The screen locks after five minutes of no input at all."
    events = services.ask(conversation=conversation, question="laptop encryption and vacation days")
    received = ""
    for event in events:
        received += event["text"]
        if "[1]" in received:
            break
    events.close()  # what the server does when the reader stops (the browser hangs up)

    answer = conversation.messages.get(role="assistant")
    assert answer.stopped and answer.error == Message.STOPPED
    assert answer.content.startswith("Laptops are encrypted [1].")
    assert "no input at all" not in answer.content
    [citation] = answer.citation_set.all()
    assert (citation.index, citation.title) == (1, "security")


# --- the passage panel ------------------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def long_document(user, collection):
    text = " ".join(f"Sentence number {n} of the long travel handbook about trains and hotels." for n in range(400))
    document = add(user, collection, "long", text)
    assert document.chunks.count() >= 3
    return document


def test_the_passage_panel_shows_the_chunk_highlighted_with_its_neighbours_and_a_link_to_the_document(
    signed_in, user, collection
):
    document = long_document(user, collection)
    before, chunk, after = document.chunks.order_by("ordinal")[:3]

    response = signed_in.get(reverse("chat:passage", args=[chunk.pk]), HTTP_X_REQUESTED_WITH="fetch")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # a fragment for the panel
    assert f"long, passage 2 of {document.chunks.count()}" in html
    cited = html.index(f"<mark>{chunk.text}</mark>")
    assert html.count("<mark>") == 1
    assert html.index(before.text) < cited < html.index(after.text, cited)
    assert f'href="/documents/{document.pk}/?chunk={chunk.pk}#chunk-{chunk.pk}"' in html
    more_like_this = reverse("documents:chunk_similar", args=[chunk.pk])
    assert f'href="{more_like_this}">More like this</a>' in html
    assert signed_in.get(more_like_this).status_code == 200  # the link leads to the passage's neighbours

    page = signed_in.get(reverse("chat:passage", args=[chunk.pk]))  # a tab of its own (phones)
    assert "<html" in page.content.decode() and chunk.text[:40] in page.content.decode()


def test_a_passage_the_user_may_not_read_is_not_found(client, user, other_user, collection):
    document = long_document(user, collection)
    chunk = document.chunks.first()
    client.force_login(other_user)
    for chunk_id in (chunk.pk, chunk.pk + 10_000):
        response = client.get(reverse("chat:passage", args=[chunk_id]), HTTP_X_REQUESTED_WITH="fetch")
        assert response.status_code == 404
        assert "Sentence number" not in response.content.decode()


def test_a_member_of_a_shared_collection_may_read_its_passages(client, user, other_user, collection):
    document = long_document(user, collection)
    collection.members.add(other_user)
    client.force_login(other_user)
    response = client.get(reverse("chat:passage", args=[document.chunks.first().pk]), HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 200


def test_the_passage_panel_needs_sign_in(client, user, collection):
    chunk = long_document(user, collection).chunks.first()
    response = client.get(reverse("chat:passage", args=[chunk.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- regenerate -------------------------------------------------------------------------------------------


def events_of(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[len("data: "):]) for block in body.split("\n\n") for line in block.split("\n")
            if line.startswith("data: ")]


def test_regenerate_asks_the_last_question_again_and_replaces_the_last_answer(signed_in, llm, conversation, library):
    url = reverse("chat:ask", args=[conversation.pk])
    # The loopback model answers every request with reply_text, a follow-up's search rewrite included.
    llm.reply_text = "Vacation days: twenty-five [1]."
    events_of(signed_in.post(url, {"question": "How many vacation days?"}))
    llm.reply_text = "Laptops use disk encryption [1]."
    events_of(signed_in.post(url, {"question": "And laptops?"}))
    llm.reply_text = "Laptops must use full disk encryption [1]."

    events = events_of(signed_in.post(url, {"question": "", "regenerate": "1"}))

    assert events[-1]["type"] == "done"
    assert [(m.role, m.content) for m in conversation.messages.all()] == [
        ("user", "How many vacation days?"), ("assistant", "Vacation days: twenty-five [1]."),
        ("user", "And laptops?"), ("assistant", "Laptops must use full disk encryption [1]."),
    ]
    # The model saw the question once: the answer it replaces is not in the history either.
    assert sum(str(m["content"]).count("And laptops?") for m in llm.last_messages) == 1
    assert not any("Laptops use disk encryption" in str(m["content"]) for m in llm.last_messages)


def test_a_regenerated_answer_that_fails_keeps_the_answer_it_was_to_replace(signed_in, llm, conversation, library):
    url = reverse("chat:ask", args=[conversation.pk])
    llm.reply_text = "Vacation days: twenty-five [1]."
    events_of(signed_in.post(url, {"question": "How many vacation days?"}))
    llm.fail(400, message="Model overloaded")

    done = events_of(signed_in.post(url, {"question": "", "regenerate": "1"}))[-1]

    assert done["type"] == "done" and "Model overloaded" in done["error"]
    assert [(m.role, m.content, bool(m.error)) for m in conversation.messages.order_by("id")][:2] == [
        ("user", "How many vacation days?", False), ("assistant", "Vacation days: twenty-five [1].", False),
    ]  # nothing lost: the question once, the old answer, then the failed attempt
    assert conversation.messages.filter(role="user").count() == 1


def test_regenerate_without_a_question_is_refused(signed_in, conversation):
    response = signed_in.post(reverse("chat:ask", args=[conversation.pk]), {"regenerate": "1"})
    assert response.status_code == 400 and "no question to ask again" in response.content.decode()
