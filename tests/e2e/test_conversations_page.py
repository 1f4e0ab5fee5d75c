"""Managing conversations in a real browser, on a phone: rename in place and from the list, export, delete."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Conversation, Message
from tests.e2e.chat_page import ask, wait_until_saved

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def chat(page, sign_in, user, live_server):
    """Alice's conversations, the page signed in at phone size; open(conversation) shows one."""
    page.emulate_media(reduced_motion="reduce")
    sign_in(user)
    page.set_viewport_size(PHONE)

    def open_(conversation):
        page.goto(live_server.url + f"/chat/{conversation.pk}/")
        return page

    return open_


def converse(
    owner, title: str, question: str = "Which trips go by train?", answer: str = "Short ones."
) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title)
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, content=answer)
    return conversation


def expect_the_list_item_titled(page, title: str) -> None:
    """The open conversation's item in the list says ``title`` everywhere: its link, its checkbox, its ⋯ menu (the
    title field, which would otherwise save the old title back) and its delete confirmation."""
    page.get_by_role("button", name="☰ Conversations").click()
    item = page.locator("#conversation-list > li.current")
    expect(item.locator(":scope > a")).to_have_text(title)
    expect(item.get_by_role("checkbox")).to_have_accessible_name(f"Select “{title}”")
    item.get_by_label(f"Actions for “{title}”").click()
    expect(item.get_by_label("Title")).to_have_value(title)
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", answer)
    item.get_by_role("button", name="Delete").click()
    assert asked == [f"Delete “{title}”? This cannot be undone."]


def test_renaming_in_place_updates_the_heading_and_the_list(chat, user):
    conversation = converse(user, "Which trips go by train?")
    page = chat(conversation)
    page.get_by_role("button", name="Rename").click()
    field = page.get_by_label("Conversation title")
    expect(field).to_be_focused()
    expect(field).to_have_value("Which trips go by train?")
    field.press("Escape")
    expect(page.locator("#conversation-title")).to_have_text("Which trips go by train?")

    page.get_by_role("button", name="Rename").click()
    field.fill("   ")
    field.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Type a title first.")
    field.fill("Train travel")
    field.press("Enter")

    expect(page.locator("#conversation-title")).to_have_text("Train travel")
    expect(page).to_have_title("Train travel · RAG chat")
    expect(page.get_by_role("button", name="Rename")).to_be_focused()
    expect_the_list_item_titled(page, "Train travel")
    page.reload()
    expect(page.locator("#conversation-title")).to_have_text("Train travel")
    page.get_by_role("button", name="☰ Conversations").click()
    expect(page.locator("#conversation-list li.current > a")).to_have_text("Train travel")


def test_the_first_question_names_the_conversation_in_the_list_and_its_menu(chat, user, llm):
    page = chat(Conversation.objects.create(owner=user))
    expect(page.locator("#conversation-title")).to_have_text("New conversation")
    ask(page, "Which trips go by train?")
    wait_until_saved(page)
    expect(page.locator("#conversation-title")).to_have_text("Which trips go by train?")
    expect_the_list_item_titled(page, "Which trips go by train?")


def test_renaming_from_the_list_keeps_the_open_conversation(chat, user):
    other = converse(user, "Hotels")
    shown = converse(user, "Trains")
    page = chat(shown)
    page.get_by_role("button", name="☰ Conversations").click()
    page.get_by_label("Actions for “Hotels”").click()
    item = page.locator("#conversation-list > li").filter(has=page.get_by_role("link", name="Hotels"))
    item.get_by_label("Title").fill("Hotel budgets")
    item.get_by_role("button", name="Rename").click()
    expect(page.locator(".messages")).to_contain_text("Conversation renamed.")
    expect(page.locator("#conversation-title")).to_have_text("Trains")
    other.refresh_from_db()
    assert other.title == "Hotel budgets"


def test_export_downloads_the_conversation_as_markdown(chat, user, tmp_path):
    conversation = converse(user, "Train travel", "Which trips go by train?", "Trips under four hours.")
    page = chat(conversation)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export").click()
    download = download_info.value
    assert download.suggested_filename == "train-travel.md"
    download.save_as(tmp_path / "export.md")
    text = (tmp_path / "export.md").read_text()
    assert text.startswith("# Train travel\n")
    assert "> Which trips go by train?" in text and "Trips under four hours." in text


def test_delete_asks_first_and_cancelling_keeps_the_conversation(chat, user):
    conversation = converse(user, "Train travel")
    page = chat(conversation)
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete", exact=True).click()
    assert asked == ["Delete this conversation? This cannot be undone."]
    expect(page.locator("#conversation-title")).to_have_text("Train travel")
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Conversation deleted.")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_ticked_conversations_are_deleted_together_after_confirmation(chat, user):
    keep = converse(user, "Keep me")
    gone = [converse(user, "Old one"), converse(user, "Older one")]
    page = chat(keep)
    page.get_by_role("button", name="☰ Conversations").click()
    expect(page.get_by_role("button", name="ticked")).to_be_hidden()
    page.get_by_label("Select “Old one”").check()
    expect(page.get_by_role("button", name="Delete 1 ticked")).to_be_visible()
    page.get_by_label("Select “Older one”").check()
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete 2 ticked").click()
    assert asked == ["Delete 2 conversations? This cannot be undone."]
    assert Conversation.objects.filter(owner=user).count() == 3
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete 2 ticked").click()
    expect(page.locator(".messages")).to_contain_text("2 conversations deleted.")
    assert list(Conversation.objects.filter(owner=user)) == [keep]
    assert not Conversation.objects.filter(pk__in=[c.pk for c in gone]).exists()
