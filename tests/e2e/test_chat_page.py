"""The chat page in a real browser: streamed answers, citations to the passage, access, no script injection."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from chat import services
from chat.models import Conversation
from documents import pipeline
from documents import services as document_services
from documents.models import Collection
from tests.documents_factory import make_pdf
from tests.e2e.chat_page import ask, last_answer

READY_TIMEOUT = 60_000
QUESTION = "Which trips go by train?"
ANSWER = "Employees book trains for trips under four hours [1]. Longer trips may fly, with a manager's approval [1]."

# Records the length of the streaming answer's text each time it changes, to tell streaming from one block.
RECORD_STREAM = """() => {
  window.streamLengths = [];
  new MutationObserver(() => {
    const answer = document.querySelector("#messages .answer.streaming");
    if (answer) window.streamLengths.push(answer.textContent.length);
  }).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
}"""



def add_document(owner, collection, name: str, body: bytes):
    """A ready document, ingested in-process (the upload path through the worker is tested once, below)."""
    document = document_services.document_create(owner=owner, collection=collection,
                                                  file=SimpleUploadedFile(name, body), enqueue=False)
    return pipeline.document_ingest(document_id=document.pk)




def test_asking_streams_the_answer_and_its_citation_opens_the_highlighted_passage(
    signed_in_page, celery_worker, llm, tmp_path
):
    page = signed_in_page
    llm.reply_text = ANSWER
    llm.stream_delay = 0.08
    pdf = make_pdf(tmp_path / "travel-policy.pdf", [
        "Expense reports are due on the fifth of each month.",
        "Employees book trains for trips under four hours. Longer trips may fly with approval.",
    ])
    page.set_input_files("#file-input", [str(pdf)])
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#documents-table tr").filter(has_text="travel-policy").locator(".badge")).to_have_text(
        "Ready", timeout=READY_TIMEOUT
    )

    page.get_by_role("link", name="Chat", exact=True).click()
    page.get_by_role("button", name="Start a conversation").click()
    expect(page.get_by_role("heading", name="New conversation")).to_be_visible()
    expect(page.locator("#chat-empty")).to_contain_text("Ask a question about your documents")
    box = page.get_by_label("Question")
    box.type("Which trips")
    box.press("Shift+Enter")  # a new line, not a send
    expect(box).to_have_value("Which trips\n")
    expect(page.locator("#messages .bubble")).to_have_count(0)
    page.evaluate(RECORD_STREAM)

    ask(page, QUESTION)

    # At once: the question, a thinking state, and the button disabled until the answer is complete.
    expect(page.locator("#messages .bubble.user")).to_have_text(QUESTION)
    expect(page.locator("#ask-button")).to_be_disabled()
    # The conversation is named after the question, in the header and the list.
    expect(page.locator("#conversation-title")).to_have_text(QUESTION)
    expect(page.locator("#conversation-list li.current > a")).to_have_text(QUESTION)
    answer = last_answer(page).locator(".answer")
    expect(answer).to_contain_text("Employees book trains")
    partial = answer.inner_text()
    assert "approval" not in partial, "the whole answer arrived at once: it should stream"
    expect(answer).to_contain_text("with a manager's approval [1].")
    expect(page.locator("#ask-button")).to_be_enabled()
    expect(page.locator("#ask-button")).to_have_text("Ask")
    lengths = page.evaluate("window.streamLengths")
    assert len(set(lengths)) >= 5 and lengths == sorted(lengths), lengths  # grew token by token
    expect(last_answer(page).locator("ol.citations")).to_contain_text("travel-policy, page 2")

    cite = answer.locator("a.cite").first
    expect(cite).to_have_text("[1]")
    href = cite.get_attribute("href")
    cite.click()  # the passage opens beside the answer, with a link to the whole document
    panel = page.locator("#passage-panel")
    expect(panel.locator("mark")).to_contain_text("Employees book trains for trips under four hours.")
    expect(panel.locator(".passage-label")).to_have_text("travel-policy, page 2")
    panel.get_by_role("link", name="Open the whole document").click()

    expect(page).to_have_url(re.compile(r"/documents/\d+/\?chunk=(\d+)#chunk-\1$"))
    chunk_id = re.search(r"chunk=(\d+)", href).group(1)
    passage = page.locator(f"#chunk-{chunk_id}")
    expect(passage).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(passage).to_contain_text("page 2")
    expect(passage).to_contain_text("Employees book trains for trips under four hours.")
    expect(page.locator(".chunk.highlighted")).to_have_count(1)

    page.go_back()
    page.reload()
    expect(page.locator("#messages .bubble.user")).to_have_text(QUESTION)
    expect(last_answer(page).locator(".answer")).to_contain_text("with a manager's approval")
    expect(last_answer(page).locator("a.cite").first).to_have_attribute("href", href)
    expect(last_answer(page).locator("ol.citations")).to_contain_text("travel-policy, page 2")
    expect(page.locator("#conversation-list li.current > a")).to_have_text(QUESTION)


def test_without_a_language_model_the_answer_quotes_passages_with_citations(signed_in_page, user, collection,
                                                                             settings, live_server):
    settings.LLM_BACKEND = "extractive"
    add_document(user, collection, "travel-policy.txt",
                 b"Employees book trains for trips under four hours. Hotels may cost at most 150 EUR per night.")
    conversation = Conversation.objects.create(owner=user, collection=collection)
    page = signed_in_page
    page.goto(live_server.url + f"/chat/{conversation.pk}/")

    ask(page, "How much may hotels cost per night?")

    answer = last_answer(page).locator(".answer")
    expect(answer.locator("blockquote").first).to_contain_text("Hotels may cost at most 150 EUR per night.")
    expect(answer).to_contain_text("No language model is configured")
    cite = answer.locator("a.cite").first
    expect(cite).to_have_text("[1]")
    cite.click()
    expect(page.locator("#passage-panel mark")).to_contain_text("150 EUR per night")


def test_a_failing_model_shows_an_error_bubble_and_the_question_can_be_asked_again(
    signed_in_page, user, collection, llm, live_server
):
    add_document(user, collection, "travel-policy.txt", b"Employees book trains for trips under four hours.")
    conversation = Conversation.objects.create(owner=user)
    llm.fail(400, message="The model is overloaded")
    page = signed_in_page
    page.goto(live_server.url + f"/chat/{conversation.pk}/")

    ask(page, QUESTION)

    error = last_answer(page).get_by_role("alert")
    expect(error).to_contain_text("The model is overloaded")
    expect(last_answer(page)).to_have_class(re.compile(r"\bfailed\b"))
    expect(page.locator("#ask-button")).to_be_enabled()

    llm.reply_text = "Trains, for trips under four hours [1]."
    ask(page, QUESTION)
    expect(last_answer(page).locator(".answer")).to_contain_text("Trains, for trips under four hours")
    expect(page.locator("#messages .bubble.user")).to_have_count(2)


def test_another_user_can_open_neither_the_conversation_nor_its_ask_endpoint_nor_the_cited_document(
    sign_in, user, other_user, collection, settings, live_server
):
    settings.LLM_BACKEND = "extractive"
    secret = add_document(user, collection, "salaries.txt", b"Alice earns 98000 EUR a year as principal engineer.")
    alices = Conversation.objects.create(owner=user)
    done = list(services.ask(conversation=alices, question="How much does Alice earn a year?"))[-1]
    [citation] = done["citations"][:1]
    mallorys = Conversation.objects.create(owner=other_user, title="Mallory's own")
    own_document = add_document(other_user, Collection.objects.create(name="M", owner=other_user), "m.txt",
                                b"Mallory's reading list.")
    page = sign_in(other_user)

    for pk in range(alices.pk - 3, mallorys.pk + 4):  # the real id, and guesses around it
        if pk != mallorys.pk:
            assert page.goto(live_server.url + f"/chat/{pk}/").status == 404
    expect(page.locator("body")).to_contain_text("not shared with you")
    page.goto(live_server.url + f"/chat/{mallorys.pk}/")
    expect(page.locator("#conversation-list")).not_to_contain_text("How much does Alice earn")
    # Posting to alice's ask endpoint from mallory's page, with a valid CSRF token: not found, nothing saved.
    statuses = page.evaluate(
        """async (urls) => {
          const statuses = [];
          for (const url of urls) {
            const body = new FormData(document.getElementById("ask-form"));
            body.set("question", "How much does Alice earn?");
            statuses.push((await fetch(url, {method: "POST", body})).status);
          }
          return statuses;
        }""",
        [f"/chat/{alices.pk}/ask/", f"/chat/{alices.pk + 100}/ask/"],
    )
    assert statuses == [404, 404]
    assert alices.messages.count() == 2
    guesses = [f"/documents/{pk}/" for pk in range(secret.pk - 2, secret.pk + 3) if pk != own_document.pk]
    for url in (citation["url"], *guesses):
        assert page.goto(live_server.url + url).status == 404, url
        expect(page.locator("body")).not_to_contain_text("98000")
    # Mallory's own document with alice's chunk id highlights nothing of alice's.
    page.goto(live_server.url + f"/documents/{own_document.pk}/?chunk={citation['chunk_id']}")
    expect(page.locator("body")).not_to_contain_text("98000")
    expect(page.locator(".chunk.highlighted")).to_have_count(0)


HOSTILE = (
    b"Security notice for the training. <script>alert(1)</script> <img src=x onerror=alert(2)> "
    b"Read the security guide here: [click](javascript:alert(1)) before the training."
)


@pytest.mark.parametrize("backend", ["extractive", "openai"])
def test_a_hostile_document_quoted_in_an_answer_runs_no_script(
    signed_in_page, user, collection, settings, openai_server, live_server, backend
):
    settings.LLM_BACKEND = backend
    settings.OPENAI_BASE_URL = openai_server.url
    settings.OPENAI_API_KEY = "k"
    # A model that repeats what it read, markup included.
    openai_server.reply_text = (
        "The notice says <script>alert(1)</script> <img src=x onerror=alert(2)> and [click](javascript:alert(1)) [1]."
    )
    add_document(user, collection, "notice.txt", HOSTILE)
    conversation = Conversation.objects.create(owner=user)
    page = signed_in_page
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live_server.url + f"/chat/{conversation.pk}/")

    ask(page, "What does the security notice say about the training?")

    answer = last_answer(page).locator(".answer")
    expect(answer.locator("a.cite").first).to_be_visible()
    expect(answer).to_contain_text("<script>alert(1)</script>")  # shown as the text it is
    assert page.locator("#messages script, #messages img, #messages [onerror]").count() == 0

    def javascript_links():
        return page.evaluate(
            """() => [...document.querySelectorAll("#messages [href], #messages [src]")]
                 .map((e) => e.getAttribute("href") || e.getAttribute("src"))
                 .filter((url) => /^\\s*javascript:/i.test(url))"""
        )

    assert javascript_links() == []
    for link in answer.locator("a").all():  # clicking every link in the answer runs nothing either
        if "cite" not in (link.get_attribute("class") or ""):
            link.click()
    page.reload()  # the saved conversation, rendered by the server
    expect(last_answer(page).locator(".answer")).to_contain_text("<script>alert(1)</script>")
    assert javascript_links() == []
    last_answer(page).locator("a.cite").first.click()  # the cited passage, beside the answer
    expect(page.locator("#passage-panel mark")).to_contain_text("<script>alert(1)</script>")
    page.get_by_role("link", name="Open the whole document").click()  # and in its document
    expect(page.locator(".chunk.highlighted")).to_contain_text("<script>alert(1)</script>")
    page.wait_for_timeout(200)
    assert dialogs == []


def test_a_pasted_question_over_the_limit_is_cut_with_a_notice_and_a_blank_one_is_not_sent(
    signed_in_page, user, collection, llm, live_server
):
    conversation = Conversation.objects.create(owner=user, collection=collection)
    page = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(live_server.url + f"/chat/{conversation.pk}/")
    box = page.get_by_label("Question")
    questions = page.locator("#messages .bubble.user")

    box.fill("   ")
    box.press("Enter")
    expect(box).to_have_accessible_description("Type a question first.")
    box.fill("")
    expect(box).to_have_accessible_description("")
    page.get_by_role("button", name="Ask", exact=True).click()  # empty: the same words, not the browser's
    expect(box).to_have_accessible_description("Type a question first.")
    expect(questions).to_have_count(0)

    long_question = "Which trips go by train, and which may fly with a manager's approval? " * 90  # 6,390
    page.evaluate("(text) => navigator.clipboard.writeText(text)", long_question)
    box.focus()
    page.keyboard.press("Control+V")
    expect(box).to_have_value(long_question[: services.QUESTION_MAX_CHARACTERS])
    expect(box).to_have_accessible_description(re.compile(r"^4,000 characters at most: the question was cut\."))
    box.press("Backspace")  # under the limit again: the count shows
    expect(box).to_have_accessible_description("3,999 of 4,000 characters")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(questions).to_have_count(1)
    expect(box).to_have_accessible_description("")


def test_only_in_shows_fifty_documents_of_the_conversations_collection_and_narrows_as_one_types(
    signed_in_page, user, collection, settings, live_server
):
    settings.LLM_BACKEND = "extractive"
    for n in range(60):
        add_document(user, collection, f"policy-{n:02}.txt",
                     f"Rule {n}: trains are booked for trips under {n} hours.".encode())
    add_document(user, Collection.objects.create(name="Archive", owner=user), "archived-policy.txt",
                 b"Old rule: trains are booked for trips under nine hours.")
    conversation = Conversation.objects.create(owner=user, collection=collection)
    page = signed_in_page
    page.goto(live_server.url + f"/chat/{conversation.pk}/")
    page.locator("details.filters > summary").click()
    only_in, find = page.get_by_label("Only in"), page.get_by_label("Find a document")
    documents, note = only_in.locator("option:not([value=''])"), page.locator("#document-filter-more")

    # The collection's 60, not the other collection's: the first 50 by title, and how to reach the others.
    expect(documents).to_have_count(50)
    expect(documents.first).to_have_text("policy-00")
    expect(documents.last).to_have_text("policy-49")
    expect(note).to_have_text("10 more: type to narrow.")

    find.fill("policy-5")  # narrowed under the cap: all that match, no note
    expect(documents).to_have_text([f"policy-{n}" for n in range(50, 60)])
    expect(note).to_be_hidden()
    only_in.select_option(label="policy-57")
    find.fill("POLICY-1")  # case-insensitive; the chosen document stays listed and chosen
    expect(documents).to_have_text([f"policy-{n}" for n in range(10, 20)] + ["policy-57"])
    expect(only_in).to_have_value(str(conversation.collection.documents.get(title="policy-57").pk))
    find.fill("archived")  # in another collection: not offered
    expect(documents).to_have_text(["policy-57"])
    expect(note).to_have_text("No document matches.")
    find.press("Enter")  # narrows, does not send
    expect(page.locator("#messages .bubble.user")).to_have_count(0)

    ask(page, "trains booked trips hours")  # the question is asked of the chosen document only
    citations = last_answer(page).locator("ol.citations li")
    expect(citations.first).to_contain_text("policy-57")
    assert {text.split(",")[0].strip() for text in citations.all_inner_texts()} == {"policy-57"}

    # A conversation in every collection: each collection's documents under its name, which narrows too.
    page.goto(live_server.url + f"/chat/{Conversation.objects.create(owner=user).pk}/")
    page.locator("details.filters > summary").click()
    groups = only_in.locator("optgroup")
    expect(groups).to_have_count(2)
    expect(note).to_have_text("11 more: type to narrow.")
    find.fill("archive")
    expect(groups).to_have_count(1)
    expect(groups.first).to_have_attribute("label", "Archive")
    expect(documents).to_have_text(["archived-policy"])
    find.fill("handbook policy-3")  # each word, in the title or the collection's name
    expect(groups.first).to_have_attribute("label", "Handbook")
    expect(documents).to_have_text([f"policy-{n}" for n in range(30, 40)])
