"""Answers in a real browser: Markdown rendered as it streams (no syntax shown), stop, copy, regenerate, and the
cited passage beside the answer (a tab of its own on a phone)."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.documents_factory import add_text_document as add
from tests.e2e.chat_page import ask, last_answer, wait_until_saved

POLICY = (
    "Employees book trains for trips under four hours. Longer trips may fly with the approval of a manager. "
    "Hotels may cost at most 150 EUR per night."
)
MARKDOWN_ANSWER = (
    "> Employees book trains for trips under four hours [1].\n\n"
    "That is **a firm rule for every employee** and the form is `travel request form B` today.\n\n"
    "- trains under *four hours of travel*\n"
    "- flights with **a manager's approval** [1]"
)

# Records the streaming answer as the reader sees it each time it changes: its text, and whether the
# Markdown is already rendered (a blockquote, bold text, code).
RECORD_STREAM = """() => {
  window.seen = [];
  new MutationObserver(() => {
    const answer = document.querySelector("#messages .answer.streaming");
    if (answer && answer.innerText) window.seen.push({
      text: answer.innerText,
      rendered: ["blockquote", "strong", "code"].filter((tag) => answer.querySelector(tag)).length,
    });
  }).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def conversation(user, collection):
    add(user, collection, "travel-policy", POLICY)
    return Conversation.objects.create(owner=user, collection=collection)


@pytest.fixture
def chat(signed_in_page, conversation, live_server):
    signed_in_page.goto(live_server.url + f"/chat/{conversation.pk}/")
    return signed_in_page




def test_markdown_is_rendered_as_it_streams_with_no_syntax_showing(chat, llm):
    llm.reply_text = MARKDOWN_ANSWER
    llm.stream_delay = 0.03
    chat.evaluate(RECORD_STREAM)

    ask(chat, "Which trips go by train?")

    answer = last_answer(chat).locator(".answer")
    expect(answer.locator("a.cite").first).to_be_visible()  # done: the server's HTML, citations linked
    expect(chat.locator("#ask-button")).to_be_enabled()
    seen = chat.evaluate("window.seen")
    assert len(seen) >= 10, seen  # it streamed, piece by piece
    assert any(s["rendered"] == 3 for s in seen), "the Markdown was not rendered while streaming"
    for snapshot in seen:
        text = snapshot["text"]
        assert "*" not in text and "`" not in text, text
        assert not re.search(r"^\s*[>#-]", text, re.M), text
    expect(answer.locator("blockquote")).to_contain_text("Employees book trains")
    expect(answer.locator("strong").first).to_have_text("a firm rule for every employee")
    expect(answer.locator("code")).to_have_text("travel request form B")
    expect(answer.locator("li")).to_have_count(2)


def test_stop_keeps_the_partial_answer_marked_stopped_also_after_a_reload(chat, llm, conversation):
    llm.reply_text = " ".join(f"Word{n}" for n in range(200)) + " [1]."
    llm.stream_delay = 0.1
    ask(chat, "Which trips go by train?")
    answer = last_answer(chat)
    expect(answer.locator(".answer")).to_contain_text("Word5")

    answer.get_by_role("button", name="Stop").click()

    expect(answer).to_have_class(re.compile(r"\bstopped\b"))
    expect(answer.locator(".stopped-note")).to_have_text(Message.STOPPED)
    expect(chat.locator("#ask-button")).to_be_enabled()
    expect(answer.get_by_role("button", name="Stop")).to_have_count(0)
    kept = answer.locator(".answer").inner_text()
    assert "Word5" in kept and "Word199" not in kept
    # The server saves what it had sent when it notices the page hung up (at its next write).
    deadline = time.monotonic() + 20
    while not conversation.messages.filter(role="assistant").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    saved = conversation.messages.get(role="assistant")
    assert saved.stopped and saved.content.startswith(kept.split(" Word5")[0])
    assert "Word199" not in saved.content

    chat.reload()
    expect(last_answer(chat)).to_have_class(re.compile(r"\bstopped\b"))
    expect(last_answer(chat).locator(".stopped-note")).to_have_text(Message.STOPPED)
    expect(last_answer(chat).locator(".answer")).to_contain_text("Word5")


def test_copy_puts_the_answer_text_on_the_clipboard(chat, llm):
    chat.context.grant_permissions(["clipboard-read", "clipboard-write"])
    llm.reply_text = "Trains, for trips under **four hours** [1]."
    ask(chat, "Which trips go by train?")
    answer = last_answer(chat)
    expect(answer.locator("a.cite")).to_be_visible()

    answer.get_by_role("button", name="Copy").click()

    expect(answer.get_by_role("status")).to_have_text("Copied")
    assert chat.evaluate("navigator.clipboard.readText()") == "Trains, for trips under **four hours** [1]."
    chat.reload()  # a saved answer copies the same
    chat.evaluate("navigator.clipboard.writeText('')")
    last_answer(chat).get_by_role("button", name="Copy").click()
    expect(last_answer(chat).get_by_role("status")).to_have_text("Copied")
    assert chat.evaluate("navigator.clipboard.readText()") == "Trains, for trips under **four hours** [1]."


def test_regenerate_asks_the_last_question_again_and_replaces_the_last_answer(chat, llm, conversation):
    llm.reply_text = "Trains, for trips under four hours [1]."
    ask(chat, "Which trips go by train?")
    expect(last_answer(chat).locator("a.cite")).to_be_visible()
    llm.reply_text = "Hotels may cost at most 150 EUR per night [1]."
    ask(chat, "How much may hotels cost?")
    expect(last_answer(chat).locator(".answer")).to_contain_text("150 EUR")
    first = chat.locator("#messages .bubble.assistant").first
    expect(first.get_by_role("button", name="Regenerate")).to_be_hidden()  # the last answer's only
    llm.reply_text = "At most 150 EUR a night, in every city [1]."

    last_answer(chat).get_by_role("button", name="Regenerate").click()

    expect(last_answer(chat).locator(".answer")).to_contain_text("in every city")
    expect(chat.locator("#messages .bubble.user")).to_have_count(2)
    expect(chat.locator("#messages .bubble.user").last).to_have_text("How much may hotels cost?")
    expect(chat.locator("#messages .bubble.assistant")).to_have_count(2)
    wait_until_saved(chat)  # the text above shows while it streams, before the server has saved it
    chat.reload()
    expect(chat.locator("#messages .bubble.assistant")).to_have_count(2)
    expect(last_answer(chat).locator(".answer")).to_contain_text("in every city")
    assert [m.content for m in conversation.messages.all()][2:] == [
        "How much may hotels cost?", "At most 150 EUR a night, in every city [1].",
    ]


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_a_citation_opens_its_passage_beside_the_answer_which_fits_a_phone(chat, llm):
    llm.reply_text = "Hotels: at most 150 EUR per night [1]."
    ask(chat, "How much may hotels cost?")
    answer = last_answer(chat)
    expect(answer.locator("ol.citations")).to_contain_text("travel-policy, passage 1 of 1")

    answer.locator("ol.citations a").click()  # the list's label opens it too

    panel = chat.locator("#passage-panel")
    expect(panel.locator("mark")).to_contain_text("150 EUR per night")
    expect(panel.get_by_role("link", name="Open the whole document")).to_have_attribute(
        "href", re.compile(r"^/documents/\d+/\?chunk=\d+")
    )
    chat.set_viewport_size({"width": 390, "height": 844})
    box = panel.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    # Nothing in the panel is wider than it (the page around it is the base layout's concern).
    assert panel.evaluate("(p) => p.scrollWidth <= p.clientWidth && [...p.querySelectorAll('*')].every("
                          "(e) => e.getBoundingClientRect().right <= p.getBoundingClientRect().right + 0.5)")
    chat.keyboard.press("Escape")
    expect(panel).to_be_hidden()


def test_on_a_phone_a_citation_opens_its_passage_in_a_new_tab(chat, llm):
    chat.set_viewport_size({"width": 390, "height": 844})
    llm.reply_text = "Hotels: at most 150 EUR per night [1]."
    ask(chat, "How much may hotels cost?")
    cite = last_answer(chat).locator("a.cite")
    expect(cite).to_be_visible()

    with chat.context.expect_page() as opened:
        cite.click()

    tab = opened.value
    tab.set_viewport_size({"width": 390, "height": 844})
    expect(tab.locator("mark")).to_contain_text("150 EUR per night")
    expect(tab.get_by_role("link", name="Open the whole document")).to_be_visible()
    assert no_horizontal_overflow(tab)
    expect(chat.locator("#passage-panel")).to_be_hidden()
