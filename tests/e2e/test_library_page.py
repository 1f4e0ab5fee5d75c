"""The library in a real browser: search, filters, bulk delete with its confirmation, a cited passage's
page, and no sideways scrolling on a phone (390×844) for the list and a document's page."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from documents import pipeline, selectors, services
from documents.models import Collection, Document
from tests.documents_factory import add_text_document

PHONE = {"width": 390, "height": 844}
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"


def make(user, collection, name, body, ingest=True):
    document = services.document_create(
        owner=user, collection=collection, file=SimpleUploadedFile(name, body), enqueue=False
    )
    return pipeline.document_ingest(document_id=document.pk) if ingest else document


@pytest.fixture
def library(user, other_user, collection):
    shared = Collection.objects.create(name="Shared with alice", owner=other_user)
    shared.members.add(user)
    make(user, collection, "Travel policy.txt", b"Book trains for trips under four hours.")
    make(user, collection, "Onboarding.md", b"# Onboarding\n\nMeet your buddy on Monday.")
    make(user, collection, "Scanned contract.pdf", b"%PDF-1.4\n" + bytes(200))  # fails: damaged
    make(other_user, shared, "Travel budget.txt", b"1000 EUR a year per person.")
    return shared


def titles(page) -> list[str]:
    return page.locator("#documents-table td.title a").all_inner_texts()


def test_searching_and_filtering_narrow_the_list_and_clearing_restores_it(signed_in_page, live_server, library):
    page = signed_in_page
    page.goto(live_server.url + "/documents/")
    expect(page.locator("#documents-table td.title")).to_have_count(4)

    page.locator("#library-filters").get_by_label("Search titles").fill("travel")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#documents-table td.title")).to_have_count(2)
    assert sorted(titles(page)) == ["Travel budget", "Travel policy"]

    page.locator("#library-filters").get_by_label("Collection").select_option(
        label="Shared with alice (mallory)"
    )  # applies at once
    expect(page.locator("#documents-table td.title")).to_have_count(1)
    assert titles(page) == ["Travel budget"] and re.search(r"\?q=travel&collection=\d+&sort=-date$", page.url)

    page.locator("#library-filters").get_by_label("Status").select_option(label="Failed")
    expect(page.locator("#no-match")).to_contain_text("No documents match these filters")
    page.locator("#no-match").get_by_role("link", name="clear filters").click()
    expect(page.locator("#documents-table td.title")).to_have_count(4)

    page.locator("#library-filters").get_by_label("File type").select_option(label="PDF")
    expect(page.locator("#documents-table td.title")).to_have_count(1)
    row = page.locator("#documents-table tr[data-document-id]")
    expect(row.locator(".badge")).to_have_text("Failed")
    expect(row.get_by_role("button", name="Re-ingest")).to_have_count(0)  # damaged: processing again cannot help


def test_bulk_delete_asks_to_confirm_then_deletes_the_checked_documents(signed_in_page, live_server, library):
    page = signed_in_page
    page.goto(live_server.url + "/documents/?sort=name")
    delete = page.get_by_role("button", name="Delete selected")
    expect(delete).to_be_disabled()
    # Mallory's document is readable but not alice's to delete: it has no checkbox.
    budget = page.locator("#documents-table tr").filter(has_text="Travel budget")
    expect(budget.locator('input[name="ids"]')).to_have_count(0)
    page.get_by_label("Select “Onboarding”").check()
    page.get_by_label("Select “Travel policy”").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    delete.click()

    expect(page.get_by_role("heading", name="Delete 2 documents?")).to_be_visible()
    expect(page.locator(".bulk-list")).to_contain_text("Onboarding")
    assert Document.objects.filter(title__in=["Onboarding", "Travel policy"]).count() == 2  # not yet
    page.get_by_role("button", name="Delete 2 documents").click()

    expect(page.locator(".messages")).to_contain_text("Deleted 2 documents.")
    assert "sort=name" in page.url  # back to the list as it was
    expect(page.locator("#documents-table td.title")).to_have_count(2)
    assert sorted(titles(page)) == ["Scanned contract", "Travel budget"]
    assert not Document.objects.filter(title__in=["Onboarding", "Travel policy"]).exists()


def test_all_on_this_page_checks_every_row_the_user_manages(signed_in_page, live_server, library):
    page = signed_in_page
    page.goto(live_server.url + "/documents/")
    page.get_by_label("All on this page").check()
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    page.get_by_role("button", name="Re-ingest selected").click()
    expect(page.get_by_role("heading", name="Re-ingest 2 documents?")).to_be_visible()
    expect(page.locator("#bulk-confirm")).to_contain_text("Scanned contract")  # listed as left unchanged
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("#documents-table td.title")).to_have_count(4)


@pytest.fixture
def long_document(user, collection, monkeypatch):
    monkeypatch.setattr(selectors, "CHUNK_PAGE_SIZE", 4)
    text = "\n\n".join(f"Paragraph {n}. " + "Words about the topic of this paragraph. " * 60 for n in range(14))
    return add_text_document(user, collection, "A rather long novel " + "with-a-very-long-unbroken-title-" * 3, text)


def test_a_cited_passage_opens_on_its_page_highlighted_and_scrolled_to(signed_in_page, live_server, long_document):
    page = signed_in_page
    chunk = long_document.chunks.get(ordinal=6)
    page.goto(f"{live_server.url}/documents/{long_document.pk}/?chunk={chunk.pk}")
    highlighted = page.locator(f"#chunk-{chunk.pk}")
    expect(highlighted).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(highlighted).to_be_in_viewport()
    expect(page.locator("article.chunk")).to_have_count(4)
    page.get_by_role("link", name="Next passages ›").first.click()
    expect(page.locator("article.chunk").first).to_contain_text("#9")


@pytest.fixture
def phone_page(browser, live_server, user):
    from tests.e2e.conftest import log_in

    context = browser.new_context(
        base_url=live_server.url, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    log_in(page, user)
    yield page
    context.close()


def test_the_list_and_a_document_fit_a_phone_without_sideways_scrolling(
    phone_page, live_server, library, long_document
):
    page = phone_page
    page.goto(live_server.url + "/documents/")
    expect(page.locator("#documents-table tr[data-document-id]")).to_have_count(5)
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    expect(page.locator("#documents-table thead")).to_be_hidden()  # rows are cards: each cell says what it is
    assert (
        page.locator("#documents-table tr[data-document-id]").first.evaluate("r => getComputedStyle(r).display")
        == "block"
    )

    page.goto(f"{live_server.url}/documents/{long_document.pk}/?chunk={long_document.chunks.get(ordinal=5).pk}")
    expect(page.locator("article.chunk.highlighted")).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate("[document.documentElement.scrollWidth, innerWidth]")


# Where each link's text wraps: the characters on both sides of every line break.
LINE_BREAKS = """(link) => {
  const text = link.firstChild, breaks = [];
  const range = document.createRange();
  let top = null;
  for (let i = 0; i < text.length; i++) {
    range.setStart(text, i); range.setEnd(text, i + 1);
    const rect = range.getClientRects()[0];
    if (!rect) continue;
    if (top !== null && rect.top > top + 1) breaks.push(text.data.slice(Math.max(0, i - 1), i + 1));
    top = rect.top;
  }
  return breaks;
}"""


def test_titles_wrap_between_words_not_inside_them_on_a_desktop(browser, live_server, user, collection, sign_in):
    titles = ["bad-encrypted", "odd-corrupted-recoverable", "good-codeblock", "good-117-pages", "Quarterly review"]
    for title in titles:  # damaged PDFs: each row has a long failure message in its Status
        make(user, collection, f"{title}.pdf", b"%PDF-1.4\n" + title.encode() + bytes(200))
    make(user, collection, "queued.txt", b"Waiting.", ingest=False)  # Cancel and a progress bar
    page = sign_in(user)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(live_server.url + "/documents/")
    for title in titles:
        link = page.locator("#documents-table td.title").get_by_role("link", name=title, exact=True)
        breaks = link.evaluate(LINE_BREAKS)
        # A break may follow a hyphen or a space; never split "encrypted" into "encrypte / d".
        assert all(pair[0] in "- " or pair[1] == " " for pair in breaks), (title, breaks)


def test_the_drop_zone_says_choose_files_on_a_touch_screen_and_drop_files_with_a_mouse(
    phone_page, signed_in_page, tmp_path
):
    touch, mouse = phone_page.locator("#dropzone"), signed_in_page.locator("#dropzone")
    expect(touch.get_by_text("Choose files")).to_be_visible()
    expect(touch.get_by_text("Drop files here")).to_be_hidden()
    expect(mouse.get_by_text("Drop files here")).to_be_visible()
    expect(mouse.get_by_text("Choose files")).to_be_hidden()

    # A file chosen, then none: the prompt comes back as it was.
    notes = tmp_path / "notes.txt"
    notes.write_text("Notes.")
    phone_page.set_input_files("#file-input", [str(notes)])
    expect(touch.locator("strong")).to_have_text("notes.txt")
    phone_page.set_input_files("#file-input", [])
    expect(touch.get_by_text("Choose files")).to_be_visible()
    expect(touch.get_by_text("Drop files here")).to_be_hidden()
