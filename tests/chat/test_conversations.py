"""Managing conversations: rename, search, export as Markdown, delete — each only by the owner."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import conversations
from chat.models import Citation, Conversation, Message
from documents.models import Chunk
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def converse(owner, title: str, *exchanges: tuple[str, str], collection=None) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, collection=collection)
    for question, answer in exchanges:
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
        Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, content=answer)
    return conversation


# Only the owner: every action on someone else's conversation is "not found", and changes nothing.


@pytest.mark.parametrize(
    ("method", "name", "data"),
    [
        ("get", "chat:detail", {}),
        ("get", "chat:export", {}),
        ("post", "chat:rename", {"title": "Mine now"}),
        ("post", "chat:delete", {}),
    ],
)
def test_another_users_conversation_is_not_found_for_any_action(signed_in, other_user, method, name, data):
    theirs = converse(other_user, "Salaries", ("What does Bob earn?", "Bob earns 50k."))
    response = getattr(signed_in, method)(reverse(name, args=[theirs.pk]), data)
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "Salaries"
    assert theirs.messages.count() == 2


def test_bulk_delete_deletes_ones_own_ticked_conversations_and_ignores_others(signed_in, user, other_user):
    mine = [converse(user, f"Mine {i}") for i in range(3)]
    theirs = converse(other_user, "Theirs")
    response = signed_in.post(
        reverse("chat:delete_many"), {"conversation": [mine[0].pk, mine[1].pk, theirs.pk, "x"]}, follow=True
    )
    assert list(Conversation.objects.filter(owner=user)) == [mine[2]]
    assert Conversation.objects.filter(pk=theirs.pk).exists()
    assert "2 conversations deleted." in response.content.decode()


def test_bulk_delete_with_nothing_ticked_says_so(signed_in, user):
    converse(user, "Kept")
    response = signed_in.post(reverse("chat:delete_many"), {}, follow=True)
    assert "Tick the conversations to delete first." in response.content.decode()
    assert Conversation.objects.filter(owner=user).count() == 1


def test_delete_asks_for_confirmation_in_the_page(signed_in, user):
    conversation = converse(user, "Trips")
    page = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    assert 'data-confirm="Delete this conversation? This cannot be undone."' in page
    assert 'data-confirm="Delete “Trips”? This cannot be undone."' in page  # from the list's menu


# Rename


def test_rename_from_the_page_answers_json_with_the_clean_title(signed_in, user):
    conversation = converse(user, "")
    response = signed_in.post(
        reverse("chat:rename", args=[conversation.pk]),
        {"title": "  Travel\tpolicy \n questions "},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200
    assert response.json() == {"title": "Travel policy questions"}
    conversation.refresh_from_db()
    assert conversation.title == "Travel policy questions"


@pytest.mark.parametrize(
    ("title", "detail"),
    [
        ("   ", "Type a title first."),
        ("x" * 201, "A title is at most 200 characters (201 given)."),
    ],
)
def test_a_bad_title_is_refused_with_a_reason_and_the_old_one_kept(signed_in, user, title, detail):
    conversation = converse(user, "Trips")
    response = signed_in.post(
        reverse("chat:rename", args=[conversation.pk]), {"title": title}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    conversation.refresh_from_db()
    assert conversation.title == "Trips"


def test_rename_from_the_list_returns_to_the_page_it_was_on(signed_in, user):
    shown = converse(user, "Shown")
    renamed = converse(user, "Old name")
    back = reverse("chat:detail", args=[shown.pk]) + "?q=name"
    response = signed_in.post(reverse("chat:rename", args=[renamed.pk]), {"title": "New name", "next": back})
    assert response.status_code == 302
    assert response["Location"] == back
    renamed.refresh_from_db()
    assert renamed.title == "New name"


def test_rename_never_redirects_off_site(signed_in, user):
    conversation = converse(user, "Trips")
    response = signed_in.post(
        reverse("chat:rename", args=[conversation.pk]), {"title": "Trains", "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("chat:detail", args=[conversation.pk])


# Search


def test_search_finds_titles_and_message_text_case_insensitively(user):
    by_title = converse(user, "Hotel budget", ("How much per night?", "150 EUR."))
    by_question = converse(user, "Untitled", ("Can contractors expense a HOTEL?", "No."))
    by_answer = converse(user, "Travel", ("Where do I sleep?", "In a hotel near the office."))
    converse(user, "Trains", ("Which trips go by train?", "Under four hours."))
    found = conversations.conversations_for_user(user=user, query="hotel")
    assert set(found) == {by_title, by_question, by_answer}
    assert list(conversations.conversations_for_user(user=user, query="  ")) == list(
        Conversation.objects.filter(owner=user)
    )


def test_search_never_finds_another_users_conversations(user, other_user):
    converse(other_user, "Hotel budget", ("hotel?", "hotel."))
    assert not conversations.conversations_for_user(user=user, query="hotel").exists()


def test_search_matches_a_conversation_once_however_many_messages_match(user):
    conversation = converse(user, "Hotels", *[("hotel?", "hotel.")] * 5)
    assert list(conversations.conversations_for_user(user=user, query="hotel")) == [conversation]


def test_the_sidebar_search_filters_the_list_and_keeps_the_conversation_open(signed_in, user):
    open_one = converse(user, "Trains", ("Which trips go by train?", "Under four hours."))
    converse(user, "Hotels", ("Hotel budget?", "150 EUR."))
    page = signed_in.get(reverse("chat:detail", args=[open_one.pk]), {"q": "hotel"}).content.decode()
    assert 'id="conversation-title">Trains<' in page
    list_html = page[page.index('id="conversation-list"') : page.index("</ul>", page.index('id="conversation-list"'))]
    assert "Hotels" in list_html and "Trains" not in list_html
    assert "1 matching “hotel”" in page
    hotels = Conversation.objects.get(title="Hotels")
    assert f'href="/chat/{hotels.pk}/?q=hotel"' in list_html  # opening a result keeps the results


def test_searching_from_the_chat_index_shows_results_instead_of_opening_the_latest(signed_in, user):
    converse(user, "Hotels")
    response = signed_in.get(reverse("chat:index"), {"q": "nothing like it"})
    assert response.status_code == 200
    assert "No conversation mentions “nothing like it”." in response.content.decode()


# Export


def test_export_is_a_markdown_download_with_questions_answers_and_sources(signed_in, user, collection):
    document = add_text_document(user, collection, "travel-policy", "Employees book trains for trips under four hours.")
    chunk = Chunk.objects.get(document=document)
    Chunk.objects.filter(pk=chunk.pk).update(heading="Travel > Trains", page=3)
    conversation = converse(
        user,
        "Train trips",
        ("Which trips go by train?\nAnd why?", "Trips under four hours [1]. See `policy` [2]."),
        collection=collection,
    )
    answer = conversation.messages.get(role=Message.Role.ASSISTANT)
    Citation.objects.create(
        message=answer, chunk=chunk, index=1, document_id=document.pk, title="Travel policy", page=3
    )
    Citation.objects.create(message=answer, chunk=None, index=2, document_id=999, title="Old memo")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content="And flights?")
    Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content="", error="The model did not answer."
    )

    response = signed_in.get(reverse("chat:export", args=[conversation.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="train-trips.md"'
    text = response.content.decode()
    assert text.startswith("# Train trips\n\nAsked in Handbook; exported ")
    assert (
        "## Question\n\n> Which trips go by train?\n> And why?\n\n### Answer\n\n"
        "Trips under four hours [1]. See `policy` [2].\n\nSources:\n\n"
        "1. Travel policy, page 3, section “Travel > Trains”\n"
        "2. Old memo (passage since deleted)\n"
    ) in text
    assert text.endswith("## Question\n\n> And flights?\n\n### Answer\n\n*No answer: The model did not answer.*\n")


def test_export_labels_each_source_as_the_page_does(signed_in, user, collection):
    document = add_text_document(user, collection, "notes", "Employees book trains for trips under four hours.")
    chunk = Chunk.objects.get(document=document)
    conversation = converse(user, "Trips", ("Which trips go by train?", "Short ones [1], [2], [3]."))
    answer = conversation.messages.get(role=Message.Role.ASSISTANT)
    founding = "History > 1972–1985: Founding"
    for index, passage in ((1, 4), (2, 19), (3, 21)):
        Citation.objects.create(message=answer, chunk=chunk, index=index, document_id=document.pk, passages=98,
                                passage=passage, title="A randomized trial." if index == 1 else "good-wikipedia",
                                heading="" if index == 1 else founding)

    text = signed_in.get(reverse("chat:export", args=[conversation.pk])).content.decode()

    page = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    shown = [
        "A randomized trial, passage 4 of 98",
        "good-wikipedia › History › 1972–1985: Founding, passage 19 of 98",
        "good-wikipedia › History › 1972–1985: Founding, passage 21 of 98",
    ]
    assert "Sources:\n\n" + "".join(f"{n}. {label}\n" for n, label in enumerate(shown, start=1)) in text
    assert all(f">{label}</a>" in page for label in shown)


def test_an_untitled_conversation_exports_under_its_number(signed_in, user):
    conversation = converse(user, "")
    response = signed_in.get(reverse("chat:export", args=[conversation.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="conversation-{conversation.pk}.md"'
    assert response.content.decode().startswith("# New conversation\n\nAsked in all collections;")


def test_search_wants_every_word_somewhere_in_the_conversation(user):
    both = converse(user, "Hotels", ("Which hotel in Lyon?", "The one near the station."))
    converse(user, "Lyon", ("Which train to Lyon?", "The 8:04."))
    assert list(conversations.conversations_for_user(user=user, query="hotel  station")) == [both]
    assert list(conversations.conversations_for_user(user=user, query="STAT hotel")) == [both]


def test_search_results_show_the_words_around_the_match(signed_in, user):
    converse(
        user,
        "Trips",
        (
            "Which trips go by train?",
            "Trains for trips under four hours; " * 5 + "the hotel near "
            "the station costs at most 150 EUR a night. " + "More rules follow. " * 5,
        ),
    )
    converse(user, "Hotel budgets")
    listed = conversations.conversations_listed(user=user, query="HOTEL", limit=50)
    assert {c.title: c.snippet for c in listed} == {
        "Trips": "…Trains for trips under four hours; the hotel near the station costs at most 150 EUR…",
        "Hotel budgets": "",
    }
    page = signed_in.get(reverse("chat:index"), {"q": "hotel"}).content.decode()
    assert '<p class="snippet">…Trains for trips under four hours; the hotel near' in page


def test_the_searched_list_costs_the_same_queries_for_one_match_as_for_twelve(signed_in, user):
    converse(user, "Trips 0", ("Which trips go by train?", "The hotel near the station, 150 EUR."))
    with CaptureQueriesContext(connection) as one:
        assert signed_in.get(reverse("chat:index"), {"q": "hotel"}).status_code == 200
    for i in range(1, 12):
        converse(user, f"Trips {i}", ("Which trips go by train?", "The hotel near the station, 150 EUR."))
    with CaptureQueriesContext(connection) as twelve:
        page = signed_in.get(reverse("chat:index"), {"q": "hotel"}).content.decode()
    assert "12 matching “hotel”" in page
    assert len(twelve) == len(one)  # no query per conversation found (titles, snippets)
