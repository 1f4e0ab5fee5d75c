"""The documents page in a real browser: a row says what its run does, and messages are coloured by kind."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.documents_factory import make_pdf
from tests.e2e.conftest import travel_pages
from tests.e2e.test_documents_page import row, upload


def test_a_row_shows_stage_chunks_pages_and_time_left_then_its_page_count(
    signed_in_page,
    celery_worker,
    tmp_path,
    slow_embeddings,
):
    pages = travel_pages(3)
    page = signed_in_page

    upload(page, make_pdf(tmp_path / "travel.pdf", pages))

    document_row = row(page, "travel")
    text = document_row.locator(".progress-text")
    expect(text).to_have_text(re.compile(r"^Embedding \d+/\d+ chunks · \d+% · 3 pages · about \d+ s left$"),
                              timeout=30_000)
    expect(document_row.locator(".badge")).to_have_text("Ready", timeout=60_000)
    expect(text).to_have_text("3 pages")
    expect(document_row.locator(".chunks")).to_have_text(re.compile(r"^\d+ chunks?$"))
    expect(document_row.locator("progress")).to_be_hidden()


def test_an_empty_file_is_reported_in_red_not_green(signed_in_page, tmp_path):
    empty = tmp_path / "blank.txt"
    empty.write_bytes(b"")
    page = signed_in_page

    upload(page, empty)

    line = page.locator("#upload-results li", has_text="blank.txt")
    expect(line).to_have_class("error")
    expect(line).to_contain_text("The file is empty")
    message = row(page, "blank").locator(".error")
    expect(message).to_have_class("error message-error")
    # Red, as every error (var(--bad)), not the green of a success.
    assert line.evaluate("e => getComputedStyle(e).color") == message.evaluate("e => getComputedStyle(e).color")
    assert line.evaluate("e => getComputedStyle(e).color") == "rgb(192, 54, 44)"
