"""Cancel and retry on the documents page, in a real browser: the row shows who cancelled, re-ingest runs it again."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from documents import services
from documents.models import Document

READY_TIMEOUT = 60_000


def row(page, title: str):
    return page.locator("#documents-table tr[data-document-id]").filter(
        has=page.get_by_role("link", name=title, exact=True)
    )


def test_a_queued_document_is_cancelled_with_its_reason_then_re_ingested_to_ready(
    signed_in_page, user, collection, live_server, celery_worker
):
    # Queued, its task not sent: it waits (as behind a long queue) until alice cancels it.
    document = services.document_create(
        owner=user, collection=collection, enqueue=False,
        file=SimpleUploadedFile("itinerary.txt", b"Trains to Lyon leave at nine; the hotel is by the river."),
    )
    page = signed_in_page
    page.goto(live_server.url + "/documents/")
    document_row = row(page, "itinerary")
    expect(document_row.locator(".badge")).to_have_text("Queued")
    expect(document_row.get_by_role("button", name="Re-ingest")).to_be_hidden()  # pending: Cancel, not both

    document_row.get_by_role("button", name="Cancel").click()
    expect(document_row.locator(".badge")).to_have_text("Cancelled")
    expect(document_row.locator(".error")).to_have_text("Cancelled by alice.")
    expect(document_row.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(document_row.get_by_role("button", name="Re-ingest")).to_be_visible()  # offered at once, no reload
    expect(document_row.locator("progress")).to_be_hidden()
    expect(page.locator("#upload-results")).to_contain_text("Cancelled the processing of “itinerary”.")
    assert Document.objects.get(pk=document.pk).status == Document.Status.CANCELLED

    page.reload()  # as the server renders it
    expect(document_row.locator(".badge")).to_have_text("Cancelled")
    expect(document_row.locator(".error")).to_have_text("Cancelled by alice.")
    expect(document_row.get_by_role("button", name="Cancel")).to_be_hidden()

    document_row.get_by_role("button", name="Re-ingest").click()  # the retry: from scratch, through the worker
    expect(document_row.locator(".badge")).to_have_text("Ready", timeout=READY_TIMEOUT)
    expect(document_row.locator(".chunks")).to_have_text("1 chunk")
    expect(document_row.locator(".error")).to_have_text("")
    expect(document_row.get_by_role("button", name="Cancel")).to_be_hidden()
