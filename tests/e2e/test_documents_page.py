"""The documents page in a real browser: upload several files, live progress, failures, access."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from documents import pipeline, services
from documents.models import Collection, Document
from tests.documents_factory import make_docx, make_encrypted_pdf, make_image_only_pdf, make_pdf

READY_TIMEOUT = 60_000

# Records every value each row's <progress> takes (its `value` attribute mirrors the property),
# so that a test can tell the bar moved, however fast the worker is.
RECORD_PROGRESS = """() => {
  window.progressSeen = {};
  const watch = (row) => {
    const bar = row.querySelector("progress");
    const seen = (window.progressSeen[row.dataset.documentId] = [bar.value]);
    new MutationObserver(() => seen.push(bar.value)).observe(bar, {attributes: true, attributeFilter: ["value"]});
  };
  new MutationObserver((records) => records.forEach((record) => record.addedNodes.forEach((node) => {
    if (node.matches && node.matches("tr[data-document-id]")) watch(node);
  }))).observe(document.getElementById("documents-table"), {childList: true, subtree: true});
}"""


def row(page, title: str):
    return page.locator("#documents-table tr[data-document-id]").filter(
        has=page.get_by_role("link", name=title, exact=True)
    )


def upload(page, *paths):
    page.set_input_files("#file-input", [str(path) for path in paths])
    page.get_by_role("button", name="Upload").click()


def test_uploading_two_files_shows_each_reaching_ready_with_live_progress(signed_in_page, celery_worker, tmp_path):
    page = signed_in_page
    pdf = make_pdf(tmp_path / "travel-policy.pdf", ["Book trains for trips under four hours.", "Hotels: 150 EUR."])
    docx = make_docx(
        tmp_path / "onboarding.docx",
        "Onboarding",
        [("First week", ["Meet your buddy on Monday.", "Set up your laptop and accounts."])],
    )
    page.evaluate(RECORD_PROGRESS)

    upload(page, pdf, docx)

    expect(page.locator("#upload-results")).to_contain_text("travel-policy.pdf: queued for processing.")
    expect(page.locator("#upload-results")).to_contain_text("onboarding.docx: queued for processing.")
    for title in ("travel-policy", "onboarding"):
        document_row = row(page, title)
        expect(document_row).to_have_count(1)
        bar = document_row.locator("progress")
        expect(bar).to_have_count(1)
        expect(document_row.locator(".badge")).to_have_text("Ready", timeout=READY_TIMEOUT)
        expect(document_row.locator(".chunks")).to_have_text(re.compile(r"^[1-9]\d* chunks?$"))
        expect(bar).to_have_js_property("value", 1)
        expect(document_row.locator(".error")).to_have_text("")
        # The actions follow the status as it changes: Cancel only while pending, Re-ingest once it is over.
        expect(document_row.get_by_role("button", name="Cancel")).to_be_hidden()
        expect(document_row.get_by_role("button", name="Re-ingest")).to_be_visible()
        seen = page.evaluate("id => window.progressSeen[id]", document_row.get_attribute("data-document-id"))
        assert seen[0] < 1 and seen[-1] == 1, seen  # inserted unfinished, then moved to 100% by polling
    assert page.locator("#empty-state").count() == 0
    # The page tells the truth: the database agrees with what the browser shows.
    documents = Document.objects.filter(title__in=["travel-policy", "onboarding"])
    assert {d.status for d in documents} == {Document.Status.READY}
    assert all(d.chunk_count > 0 for d in documents)


@pytest.mark.parametrize(
    ("make_bad_file", "reason"),
    [
        (lambda folder: make_encrypted_pdf(folder / "salaries.pdf"), "password-protected"),
        (lambda folder: make_image_only_pdf(folder / "salaries.pdf"), "scanned images"),
    ],
    ids=["encrypted", "image-only"],
)
def test_a_bad_file_ends_failed_with_its_reason_shown(signed_in_page, celery_worker, tmp_path, make_bad_file, reason):
    page = signed_in_page

    upload(page, make_bad_file(tmp_path))

    document_row = row(page, "salaries")
    expect(document_row.locator(".badge")).to_have_text("Failed", timeout=READY_TIMEOUT)
    expect(document_row.locator(".error")).to_contain_text(reason)
    expect(document_row.locator(".error")).to_be_visible()
    expect(document_row.locator("progress")).to_be_hidden()
    expect(document_row.locator(".chunks")).to_have_text("")
    # Processing the same file again would fail the same way: no Re-ingest, live as after a reload.
    expect(document_row.get_by_role("button", name="Re-ingest")).to_be_hidden()
    expect(document_row.get_by_role("button", name="Cancel")).to_be_hidden()
    page.reload()
    expect(document_row.get_by_role("button", name="Re-ingest")).to_have_count(0)


def test_another_user_neither_lists_nor_opens_alices_documents(sign_in, user, other_user, live_server):
    def add(owner, name, body):
        collection = Collection.objects.create(name=f"{owner.username}'s notes", owner=owner)
        document = services.document_create(
            owner=owner, collection=collection, file=SimpleUploadedFile(name, body), enqueue=False
        )
        pipeline.document_ingest(document_id=document.pk)
        return document

    alices = add(user, "alice-secrets.txt", b"Alice's private salary notes.")
    add(other_user, "mallory-notes.txt", b"Mallory's own reading list.")
    page = sign_in(other_user)

    page.goto(live_server.url + "/documents/")
    expect(row(page, "mallory-notes")).to_have_count(1)  # the list does render documents...
    expect(page.get_by_text("alice-secrets")).to_have_count(0)  # ...but none of alice's
    response = page.goto(live_server.url + f"/documents/{alices.pk}/")
    assert response.status == 404
    expect(page.get_by_text("Alice's private salary notes")).to_have_count(0)
    expect(page.get_by_text("alice-secrets")).to_have_count(0)
    expect(page.locator("body")).to_contain_text("not shared with you")


def test_a_new_user_sees_an_empty_state_explaining_what_to_do(signed_in_page):
    page = signed_in_page

    empty_state = page.locator("#empty-state")
    expect(empty_state).to_be_visible()
    expect(empty_state).to_contain_text("No documents yet")
    expect(empty_state).to_contain_text("Upload")
    expect(page.locator("#documents-table")).to_be_hidden()


def test_the_page_loads_its_stylesheet_and_script(signed_in_page, tmp_path):
    page = signed_in_page

    # app.css draws the drop zone with a dashed border; documents.js shows the chosen file names.
    expect(page.locator("#dropzone")).to_have_css("border-top-style", "dashed")
    page.set_input_files("#file-input", [str(make_pdf(tmp_path / "chosen.pdf", ["Hello."]))])
    expect(page.locator("#dropzone strong")).to_have_text("chosen.pdf")


def test_a_file_already_in_the_collection_is_refused_with_a_reason(signed_in_page, celery_worker, tmp_path):
    page = signed_in_page
    pdf = make_pdf(tmp_path / "handbook.pdf", ["Holidays: twenty-five days a year."])
    upload(page, pdf)
    expect(row(page, "handbook")).to_have_count(1)

    upload(page, pdf)

    expect(page.locator("#upload-results li.error")).to_contain_text("handbook.pdf: This file is already in")
    expect(page.locator("#upload-results li")).to_have_count(1)  # the file's reason, once (the answer is a 409)
    expect(row(page, "handbook")).to_have_count(1)
    expect(page.get_by_role("button", name="Upload")).to_be_enabled()


def test_files_all_refused_each_show_their_reason_once(signed_in_page, settings, tmp_path):
    page = signed_in_page
    settings.MAX_UPLOAD_BYTES = 100
    big = tmp_path / "big.txt"
    big.write_text("x" * 200)
    bigger = tmp_path / "bigger.txt"
    bigger.write_text("y" * 300)

    with page.expect_response(lambda response: response.request.method == "POST") as answer:
        upload(page, big, bigger)

    assert answer.value.status == 413
    lines = page.locator("#upload-results li.error")
    expect(lines).to_have_count(2)
    reason = "The file is larger than the limit of 100 bytes; split it into smaller files and upload those."
    expect(lines.nth(0)).to_have_text(f"big.txt: {reason}")
    expect(lines.nth(1)).to_have_text(f"bigger.txt: {reason}")
    expect(page.locator("#upload-results li")).to_have_count(2)
    expect(page.locator("#empty-state")).to_be_visible()
    assert Document.objects.count() == 0


def test_a_name_that_is_no_collection_yet_is_flagged_and_its_creation_said(
    collection, signed_in_page, celery_worker, tmp_path
):
    # celery_worker: the upload's run ends before the database is emptied (a run still storing once deadlocked the
    # flush).
    page = signed_in_page
    page.reload()  # with alice's collection "Handbook"
    field, note = page.locator("#upload-collection"), page.locator("#collection-note")
    expect(field).to_have_value("Handbook")
    expect(note).to_be_hidden()

    field.fill("Handbok")  # a typo
    expect(note).to_have_text("You have no collection named “Handbok”: uploading creates it.")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nTrains under four hours.")
    upload(page, notes)

    expect(page.locator("#upload-results li").first).to_have_text("New collection “Handbok” created.")
    expect(page.locator("#upload-results")).to_contain_text("notes.md: queued for processing.")
    expect(note).to_be_hidden()  # it is one of hers now
    page.reload()
    expect(field).to_have_value("Handbok")  # where she uploaded last, not the first by name


def test_the_first_upload_into_an_empty_library_brings_its_search_and_filters(signed_in_page, celery_worker, tmp_path):
    page = signed_in_page
    filters = page.locator("#library-filters")
    expect(filters).to_be_hidden()  # nothing to search yet
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nTrains under four hours.")

    upload(page, notes)

    expect(row(page, "notes")).to_have_count(1)
    expect(filters).to_be_visible()  # without a reload
    collections = filters.locator('select[name="collection"]')
    expect(collections.locator("option", has_text=services.DEFAULT_COLLECTION_NAME)).to_have_count(1)  # made now
    collections.select_option(label=services.DEFAULT_COLLECTION_NAME)  # applies at once
    expect(page).to_have_url(re.compile(r"\?collection=\d+"))
    expect(row(page, "notes")).to_have_count(1)
