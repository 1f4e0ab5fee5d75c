"""The chat pages: sign-in, ownership, new/delete, the streamed answer (SSE), query bounds, rendering."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import Citation, Conversation, Message
from chat.templatetags.answers import render_markdown
from chat.views import FILE_TYPE_LABELS
from documents import pipeline, services
from documents.models import Collection, Document

pytestmark = pytest.mark.django_db

POLICY = (
    b"Travel policy. Employees book trains for trips under four hours. "
    b"Hotels may cost at most 150 EUR per night. Flights need the approval of a manager."
)


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def document(user, collection):
    return make_document(user, collection, POLICY, "travel-policy.txt")


@pytest.fixture
def llm(llm):
    """The language model is the loopback OpenAI-protocol server."""
    llm.reply_text = "Book a **train** for trips under four hours [1]."
    return llm


def make_document(owner, collection, body: bytes, name: str, *, content_type="text/plain", metadata=None,
                  created_at=None):
    document = services.document_create(owner=owner, collection=collection, metadata=metadata,
                                      file=SimpleUploadedFile(name, body, content_type=content_type), enqueue=False)
    if created_at is not None:
        Document.objects.filter(pk=document.pk).update(created_at=created_at)
    return pipeline.document_ingest(document_id=document.pk)


def events_of(response) -> list[dict]:
    """The JSON data of each server-sent event in a streamed response."""
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[len("data: "):]) for block in body.split("\n\n") for line in block.split("\n")
            if line.startswith("data: ")]


def ask(client, conversation, question="Which trips go by train?", **extra):
    return client.post(reverse("chat:ask", args=[conversation.pk]), {"question": question, **extra})


def cited(client, conversation, **filters) -> set[int]:
    """The documents an (extractive) answer to a question about train trips cites, with these filters."""
    done = events_of(ask(client, conversation, question="trains trips hours", **filters))[-1]
    assert done["type"] == "done" and done["error"] == ""
    return {c["document_id"] for c in done["citations"]}


@pytest.fixture
def travels(user, collection, settings):
    """Three documents about train trips: of different file types, tags and ages."""
    settings.LLM_BACKEND = "extractive"
    return {
        "policy": make_document(user, collection, POLICY, "travel-policy.txt", metadata={"tags": ["policy"]}),
        "abroad": make_document(
            user, collection, b"# Abroad\n\nAbroad, trains are fine for trips under six hours.", "abroad.md",
            content_type="text/markdown", metadata={"tags": ["abroad", "policy"]},
            created_at=datetime(2020, 6, 1, tzinfo=UTC),
        ),
        "history": make_document(
            user, collection, b"In 2019 trains took trips of up to ten hours.", "history.txt",
            created_at=datetime(2019, 3, 1, tzinfo=UTC),
        ),
    }


def test_pages_require_sign_in(client, user):
    conversation = Conversation.objects.create(owner=user)
    for response in (
        client.get(reverse("chat:index")),
        client.get(reverse("chat:detail", args=[conversation.pk])),
        client.post(reverse("chat:new")),
        client.post(reverse("chat:delete", args=[conversation.pk])),
    ):
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
    response = ask(client, conversation)
    assert response.status_code == 401
    assert not conversation.messages.exists()


def test_a_new_user_is_told_to_upload_documents_first(signed_in):
    response = signed_in.get(reverse("chat:index"))
    assert response.status_code == 200
    assert b"No documents to ask about yet" in response.content
    assert reverse("documents:list").encode() in response.content


def test_with_documents_but_no_conversation_the_page_offers_to_start_one(signed_in, document):
    response = signed_in.get(reverse("chat:index"))
    assert b"Start a conversation" in response.content
    assert b"Handbook" in response.content  # the collection picker


def test_the_chat_page_opens_the_latest_conversation(signed_in, user):
    Conversation.objects.create(owner=user, title="Older")
    latest = Conversation.objects.create(owner=user, title="Latest")
    response = signed_in.get(reverse("chat:index"))
    assert response.status_code == 302 and response.url == reverse("chat:detail", args=[latest.pk])
    assert signed_in.get(reverse("chat:index") + "?new").status_code == 200


def test_conversation_list_shows_only_ones_own(signed_in, user, other_user):
    mine = Conversation.objects.create(owner=user, title="Holiday allowance")
    Conversation.objects.create(owner=other_user, title="Mallory's secret plans")
    response = signed_in.get(reverse("chat:detail", args=[mine.pk]))
    assert b"Holiday allowance" in response.content
    assert b"secret plans" not in response.content


def test_another_users_conversation_is_not_found(signed_in, other_user):
    theirs = Conversation.objects.create(owner=other_user, title="Mallory's secret plans")
    theirs.messages.create(role=Message.Role.USER, content="What are my secret plans?")
    assert signed_in.get(reverse("chat:detail", args=[theirs.pk])).status_code == 404
    assert ask(signed_in, theirs).status_code == 404
    assert signed_in.post(reverse("chat:delete", args=[theirs.pk])).status_code == 404
    assert theirs.messages.count() == 1 and Conversation.objects.filter(pk=theirs.pk).exists()


def test_new_conversation_in_a_readable_collection(signed_in, user, collection):
    response = signed_in.post(reverse("chat:new"), {"collection": collection.pk})
    conversation = Conversation.objects.get(owner=user)
    assert response.status_code == 302 and response.url == reverse("chat:detail", args=[conversation.pk])
    assert conversation.collection == collection
    page = signed_in.get(response.url)
    assert b"in Handbook" in page.content and b"New conversation" in page.content


def test_new_conversation_reuses_an_unused_one_instead_of_piling_up_empty_ones(signed_in, user, collection):
    first = signed_in.post(reverse("chat:new"), {"collection": collection.pk}).url
    assert signed_in.post(reverse("chat:new"), {"collection": collection.pk}).url == first
    assert signed_in.post(reverse("chat:new")).url != first  # another scope: another conversation
    Conversation.objects.filter(collection=collection).update(title="Used")
    assert signed_in.post(reverse("chat:new"), {"collection": collection.pk}).url != first
    assert Conversation.objects.filter(owner=user).count() == 3


def test_new_conversation_in_a_collection_shared_with_the_user(signed_in, user, other_user):
    shared = Collection.objects.create(name="Team", owner=other_user)
    shared.members.add(user)
    assert signed_in.post(reverse("chat:new"), {"collection": shared.pk}).status_code == 302
    assert Conversation.objects.get(owner=user).collection == shared


def test_new_conversation_with_a_collection_the_user_cannot_read_is_not_found(signed_in, user, other_user):
    theirs = Collection.objects.create(name="Mallory's", owner=other_user)
    assert signed_in.post(reverse("chat:new"), {"collection": theirs.pk}).status_code == 404
    assert signed_in.post(reverse("chat:new"), {"collection": "1 OR 1=1"}).status_code == 400
    assert not Conversation.objects.filter(owner=user).exists()


def test_ask_streams_token_events_then_done_with_citations_and_html(signed_in, user, document, llm):
    conversation = Conversation.objects.create(owner=user)

    response = ask(signed_in, conversation)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert {"no-cache", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}
    events = events_of(response)
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) > 3  # streamed word by word, not in one piece
    assert "".join(e["text"] for e in tokens) == llm.reply_text
    done = events[-1]
    assert done["type"] == "done" and done["error"] == ""
    assert done["content"] == llm.reply_text
    [citation] = done["citations"]
    chunk_id = document.chunks.get().pk
    url = reverse("documents:detail", args=[document.pk]) + f"?chunk={chunk_id}#chunk-{chunk_id}"
    assert citation["index"] == 1 and citation["chunk_id"] == chunk_id and citation["url"] == url
    assert citation["title"] == "travel-policy"
    assert "<strong>train</strong>" in done["html"]
    assert f'<a class="cite" href="{url}"' in done["html"].replace("&amp;", "&")
    assert done["title"] == "Which trips go by train?"
    # Saved: the question, the answer and what it cites.
    question, answer = conversation.messages.all()
    assert (question.role, question.content) == ("user", "Which trips go by train?")
    assert (answer.role, answer.content) == ("assistant", llm.reply_text)
    assert list(answer.citations.all()) == [document.chunks.get()]


def test_under_asgi_the_answer_is_an_async_stream(user, document, llm):
    from django.test import AsyncClient

    client = AsyncClient()
    client.force_login(user)
    conversation = Conversation.objects.create(owner=user)

    async def collect():
        response = await client.post(reverse("chat:ask", args=[conversation.pk]), {"question": "Trains?"})
        assert response.is_async  # Django would otherwise buffer the whole answer before sending it
        return response["Content-Type"], [part async for part in response.streaming_content]

    content_type, parts = async_to_sync(collect)()
    assert content_type == "text/event-stream"
    assert len(parts) > 3
    assert b"event: done" in parts[-1]
    assert conversation.messages.count() == 2


def test_the_reopened_conversation_shows_the_answer_with_its_citation_links(signed_in, user, document, llm):
    conversation = Conversation.objects.create(owner=user)
    events_of(ask(signed_in, conversation))
    chunk_id = document.chunks.get().pk

    page = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()

    assert "Which trips go by train?" in page
    assert "<strong>train</strong>" in page
    assert f'class="cite" href="/documents/{document.pk}/?chunk={chunk_id}#chunk-{chunk_id}"' in page
    assert "travel-policy" in page  # the numbered source list under the answer


def test_empty_question_is_refused(signed_in, user):
    conversation = Conversation.objects.create(owner=user)
    response = ask(signed_in, conversation, question="   ")
    assert response.status_code == 400
    assert response.content == b"Type a question first."
    assert not conversation.messages.exists()


def test_ask_only_accepts_post(signed_in, user):
    conversation = Conversation.objects.create(owner=user)
    assert signed_in.get(reverse("chat:ask", args=[conversation.pk])).status_code == 405


def test_a_failing_model_ends_the_stream_with_its_error_and_keeps_the_question(signed_in, user, document, llm):
    llm.fail(400, message="Model overloaded")
    conversation = Conversation.objects.create(owner=user)

    done = events_of(ask(signed_in, conversation))[-1]

    assert done["type"] == "done"
    assert "Model overloaded" in done["error"]
    assert conversation.messages.filter(role="user").count() == 1
    page = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    assert "Model overloaded" in page and "bubble assistant failed" in page


def test_an_unexpected_failure_becomes_an_error_event(signed_in, user, document, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("index corrupted")

    monkeypatch.setattr("documents.search.search", broken)
    conversation = Conversation.objects.create(owner=user)

    events = events_of(ask(signed_in, conversation))

    assert events == [{"type": "error", "error": "Something went wrong while answering. Your question is saved; "
                                                  "please try again."}]
    assert conversation.messages.get().role == "user"


def test_extractive_answers_quote_passages_with_the_no_model_note(signed_in, user, document, settings):
    settings.LLM_BACKEND = "extractive"
    conversation = Conversation.objects.create(owner=user)

    done = events_of(ask(signed_in, conversation, question="How much may hotels cost per night?"))[-1]

    assert "<blockquote>" in done["html"] and "150 EUR" in done["html"]
    assert 'class="cite"' in done["html"]
    assert "No language model is configured" in done["html"]
    assert "OPENAI_API_KEY" not in done["html"]  # configuration advice is for administrators, not in answers


def test_the_document_filter_limits_the_answer_to_that_document(signed_in, user, collection, document, settings):
    settings.LLM_BACKEND = "extractive"
    other = make_document(user, collection, b"Trains are also fine for trips under six hours abroad.", "abroad.txt")
    conversation = Conversation.objects.create(owner=user)

    done = events_of(ask(signed_in, conversation, question="trains trips hours", document=other.pk))[-1]

    assert {c["document_id"] for c in done["citations"]} == {other.pk}


def test_filters_cannot_reach_another_users_document(signed_in, user, other_user, settings):
    settings.LLM_BACKEND = "extractive"
    theirs = make_document(other_user, Collection.objects.create(name="M", owner=other_user), POLICY, "secret.txt")
    conversation = Conversation.objects.create(owner=user)

    done = events_of(ask(signed_in, conversation, question="trains trips hours", document=theirs.pk))[-1]

    assert done["citations"] == [] and "150 EUR" not in done["content"]
    assert "could not find anything" in done["content"]


def test_without_filters_the_answer_cites_every_matching_document(signed_in, user, travels):
    conversation = Conversation.objects.create(owner=user)
    assert cited(signed_in, conversation) == {d.pk for d in travels.values()}


def test_the_added_before_filter_keeps_older_documents(signed_in, user, travels):
    conversation = Conversation.objects.create(owner=user)
    assert cited(signed_in, conversation, before="2021-01-01") == {travels["abroad"].pk, travels["history"].pk}


def test_added_after_and_before_filter_a_date_range(signed_in, user, travels):
    conversation = Conversation.objects.create(owner=user)
    assert cited(signed_in, conversation, after="2020-01-01", before="2021-01-01") == {travels["abroad"].pk}
    assert cited(signed_in, conversation, after="2019-03-01", before="2019-03-02") == {travels["history"].pk}


def test_the_file_type_filter_keeps_documents_of_that_type(signed_in, user, travels):
    conversation = Conversation.objects.create(owner=user)
    assert cited(signed_in, conversation, file_type="markdown") == {travels["abroad"].pk}
    assert cited(signed_in, conversation, file_type="text") == {travels["policy"].pk, travels["history"].pk}
    assert cited(signed_in, conversation, file_type="pdf") == set()


def test_the_tag_filter_keeps_documents_tagged_so(signed_in, user, travels):
    conversation = Conversation.objects.create(owner=user)
    assert cited(signed_in, conversation, tag="abroad") == {travels["abroad"].pk}
    assert cited(signed_in, conversation, tag=" policy ") == {travels["policy"].pk, travels["abroad"].pk}
    assert cited(signed_in, conversation, tag="Abroad") == set()  # tags match exactly


def test_filters_combine_and_stay_within_the_conversations_collection(signed_in, user, travels):
    elsewhere = make_document(user, Collection.objects.create(name="Elsewhere", owner=user),
                              b"Abroad, trains suit trips under five hours.", "elsewhere.md",
                              content_type="text/markdown", metadata={"tags": ["abroad"]})
    everywhere = Conversation.objects.create(owner=user)
    in_handbook = Conversation.objects.create(owner=user, collection=travels["policy"].collection)
    assert cited(signed_in, everywhere, tag="abroad", file_type="markdown") == {travels["abroad"].pk, elsewhere.pk}
    assert cited(signed_in, in_handbook, tag="abroad", file_type="markdown") == {travels["abroad"].pk}
    assert cited(signed_in, everywhere, tag="abroad", before="2021-01-01") == {travels["abroad"].pk}


def test_the_new_filters_never_reach_another_users_documents(signed_in, user, other_user, travels):
    theirs = make_document(
        other_user, Collection.objects.create(name="M", owner=other_user),
        b"Secretly, trains are fine for trips under twenty hours.", "secret.md", content_type="text/markdown",
        metadata={"tags": ["secret"]}, created_at=datetime(2018, 1, 1, tzinfo=UTC),
    )
    conversation = Conversation.objects.create(owner=user)
    for filters in ({"tag": "secret"}, {"file_type": "markdown"}, {"before": "2019-01-01"},
                    {"after": "2017-12-31", "before": "2018-01-02"}, {"document": theirs.pk, "tag": "secret"}):
        done = events_of(ask(signed_in, conversation, question="trains trips hours", **filters))[-1]
        assert theirs.pk not in {c["document_id"] for c in done["citations"]}, filters
        assert "twenty" not in done["content"]


@pytest.mark.parametrize(("filters", "message"), [
    ({"before": "next friday"}, "The date must look like 2024-01-31."),
    ({"after": "2024-02-01", "before": "2024-02-01"}, "“Added before” must be a later date than “added after”."),
    ({"file_type": "exe"}, "Unknown file type: choose one of PDF, Word, HTML, Markdown, Text."),
    ({"file_type": "text/plain"}, "Unknown file type: choose one of PDF, Word, HTML, Markdown, Text."),
    ({"tag": "t" * 101}, "A tag is at most 100 characters."),
    ({"tag": "a\x00b"}, "A tag cannot contain control characters."),
    ({"document": "²"}, "Unknown document."),
    ({"document": str(2**63)}, "Unknown document."),
])
def test_malformed_new_filters_are_refused_with_a_clear_message(filters, message, signed_in, user):
    conversation = Conversation.objects.create(owner=user)
    response = ask(signed_in, conversation, **filters)
    assert (response.status_code, response.content.decode()) == (400, message)
    assert not conversation.messages.exists()


def test_the_filters_offer_a_date_range_file_types_and_a_tag(signed_in, user, document):
    conversation = Conversation.objects.create(owner=user)
    html = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    for field in ('name="after"', 'name="before"', 'name="file_type"', 'name="tag"'):
        assert field in html
    for value, label in FILE_TYPE_LABELS.items():
        assert f'<option value="{value}">{label}</option>' in html


def test_malformed_filters_are_refused(signed_in, user):
    conversation = Conversation.objects.create(owner=user)
    assert ask(signed_in, conversation, after="last tuesday").status_code == 400
    assert ask(signed_in, conversation, document="x").status_code == 400
    assert not conversation.messages.exists()


def test_the_chat_page_runs_a_bounded_number_of_queries(signed_in, user, document, django_assert_max_num_queries):
    chunk = document.chunks.get()

    def conversation_with(exchanges: int) -> Conversation:
        conversation = Conversation.objects.create(owner=user, title=f"{exchanges} exchanges")
        for n in range(exchanges):
            conversation.messages.create(role="user", content=f"Question {n}?")
            answer = conversation.messages.create(role="assistant", content=f"Answer {n} [1] [2].")
            Citation.objects.create(message=answer, chunk=chunk, index=1, document_id=document.pk, title="t", page=1)
            Citation.objects.create(message=answer, chunk=None, index=2, document_id=document.pk, title="gone")
        return conversation

    def queries(conversation) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = signed_in.get(reverse("chat:detail", args=[conversation.pk]))
        assert response.status_code == 200
        return len(captured)

    short, long = conversation_with(1), conversation_with(25)
    assert queries(long) == queries(short)  # no query per message or per citation
    with django_assert_max_num_queries(10):
        response = signed_in.get(reverse("chat:detail", args=[long.pk]))
    assert response.content.decode().count('class="cite"') == 25
    assert response.content.decode().count("gone (deleted)") == 25


def test_delete_conversation(signed_in, user):
    conversation = Conversation.objects.create(owner=user, title="To forget")
    conversation.messages.create(role="user", content="Forget me")

    response = signed_in.post(reverse("chat:delete", args=[conversation.pk]), follow=True)

    assert response.redirect_chain[0] == (reverse("chat:index"), 302)
    assert b"Conversation deleted." in response.content
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_answers_show_raw_html_as_text_and_drop_javascript_links():
    html = render_markdown(
        "Quoted: <script>alert(1)</script> <img src=x onerror=alert(1)> [click](javascript:alert(1)) [1]",
        {1: "/documents/1/?chunk=2#chunk-2"},
    )
    assert "<script" not in html and "<img" not in html and "javascript:" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # what the document says, shown, not run
    assert '<a class="cite" href="/documents/1/?chunk=2#chunk-2"' in html


def test_citation_numbers_link_only_to_known_passages_and_never_inside_code():
    html = render_markdown("See [1] and [7]; `a[1]` stays code.", {1: "/documents/1/?chunk=2#chunk-2"})
    assert html.count('class="cite"') == 1
    assert "[7]" in html and "<code>a[1]</code>" in html


def test_grouped_citations_link_each_number():
    html = render_markdown("Both [1, 2].", {1: "/documents/1/?chunk=2#chunk-2", 2: "/documents/1/?chunk=3#chunk-3"})
    assert html.count('class="cite"') == 2 and ">[1]</a>" in html and ">[2]</a>" in html


def test_ask_in_names_the_owner_of_a_collection_shared_with_the_user(signed_in, user, other_user, collection,
                                                                     document):
    shared = Collection.objects.create(name=collection.name, owner=other_user)  # the same name: "Handbook"
    shared.members.add(user)
    html = signed_in.get(reverse("chat:index") + "?new=1").content.decode()
    assert f'<option value="{collection.pk}">Handbook</option>' in html  # the user's own: its name alone
    assert f'<option value="{shared.pk}">Handbook — mallory</option>' in html
    conversation = Conversation.objects.create(owner=user, collection=shared)
    html = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    assert '<span class="meta">in Handbook — mallory</span>' in html


def test_only_in_lists_the_conversations_collection_or_every_collection_grouped(
    signed_in, user, other_user, collection, document
):
    shared = Collection.objects.create(name="Handbook", owner=other_user)
    shared.members.add(user)
    theirs = make_document(other_user, shared, b"Hotels cost at most 150 EUR.", "hotels.txt")
    elsewhere = make_document(user, Collection.objects.create(name="Archive", owner=user), b"Old notes.", "old.txt")

    conversation = Conversation.objects.create(owner=user, collection=collection)
    html = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    only_in = html[html.index('<select name="document"'):html.index("</select>", html.index('name="document"'))]
    assert f'<option value="{document.pk}">travel-policy</option>' in only_in
    assert str(theirs.pk) not in only_in and str(elsewhere.pk) not in only_in and "<optgroup" not in only_in

    conversation = Conversation.objects.create(owner=user)
    html = signed_in.get(reverse("chat:detail", args=[conversation.pk])).content.decode()
    only_in = html[html.index('<select name="document"'):html.index("</select>", html.index('name="document"'))]
    # Grouped under their collections, by name; two people's "Handbook" are told apart by the owner.
    assert re.findall(r'<optgroup label="([^"]*)"><option value="(\d+)"', only_in) == [
        ("Archive", str(elsewhere.pk)), ("Handbook", str(document.pk)), ("Handbook — mallory", str(theirs.pk)),
    ]


def test_the_chat_page_costs_the_same_queries_for_1_or_30_documents_and_conversations(
    signed_in, user, collection, document, django_assert_max_num_queries
):
    def page(conversation) -> str:
        response = signed_in.get(reverse("chat:detail", args=[conversation.pk]))
        assert response.status_code == 200
        return response.content.decode()

    current = Conversation.objects.create(owner=user, title="Current")
    with django_assert_max_num_queries(7) as one:  # session, user, conversation, documents, collections,
        page(current)  # conversations, messages (with citations prefetched when there are any)
    for n in range(29):
        make_document(user, Collection.objects.create(name=f"Team {n}", owner=user), f"Notes {n}.".encode(), f"{n}.txt")
        Conversation.objects.create(owner=user, title=f"Conversation {n}")
    with django_assert_max_num_queries(len(one)):  # no query per document, collection or conversation
        html = page(current)
    # Collections and documents (each with "every"), and the fixed file types (with "any").
    assert html.count("<option value=") == 1 + 30 + 1 + 30 + 1 + len(FILE_TYPE_LABELS)
    assert "Conversation 28" in html
