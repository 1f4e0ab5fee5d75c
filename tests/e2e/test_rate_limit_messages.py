"""Rate limits in a real browser: the chat page's error bubble and the documents page's per-file result."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from chat.models import Conversation
from tests.conftest import start_of_a_rate_window


@pytest.fixture(autouse=True)
def limits(settings):
    settings.RATE_LIMITS = {"chat": "1/m", "upload": "1/m"}
    settings.LLM_BACKEND = "extractive"
    start_of_a_rate_window()  # both tries in one window of the limit


def test_a_question_over_the_limit_shows_the_limit_in_its_bubble_and_keeps_the_question(signed_in_page, user):
    page = signed_in_page
    conversation = Conversation.objects.create(owner=user)
    page.goto(f"/chat/{conversation.pk}/")
    box = page.get_by_label("Question")
    box.fill("Which trips go by train?")
    box.press("Enter")
    expect(page.locator("#messages .bubble.assistant")).to_have_count(1)
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()

    box.fill("And by plane?")
    box.press("Enter")
    error = page.locator("#messages .bubble.assistant").last.get_by_role("alert")
    expect(error).to_have_text(
        re.compile(r"^Too many questions: the limit is 1 per minute\. Try again in \d+ seconds\.$")
    )
    expect(box).to_have_value("And by plane?")  # not saved: ready to send again


def test_files_over_the_upload_limit_are_refused_one_by_one(signed_in_page, celery_worker, tmp_path):
    page = signed_in_page
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("The first file of the day.")
    second.write_text("One file too many.")
    page.set_input_files("#file-input", [str(first), str(second)])
    page.get_by_role("button", name="Upload").click()
    results = page.locator("#upload-results")
    expect(results).to_contain_text("first.txt: queued for processing.")
    expect(results.locator("li.error")).to_have_text(
        re.compile(r"^second\.txt: Too many uploads: the limit is 1 per minute\. Try again in \d+ seconds\.$")
    )
