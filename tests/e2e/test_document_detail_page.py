"""A document's own page in a real browser while it is (re)processed: the run's progress and Cancel, as in the
library's row, then the page as it is once the run has ended, without a reload by hand."""

from __future__ import annotations

import re

from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from documents import services
from documents.models import Document
from documents.queue import send_ingestion
from tests.documents_factory import make_pdf
from tests.e2e.conftest import travel_pages

READY_TIMEOUT = 60_000


def test_a_pending_documents_page_shows_its_progress_and_cancel_then_its_passages_once_ready(
    signed_in_page,
    user,
    live_server,
    celery_worker,
    tmp_path,
    slow_embeddings,
):
    pages = travel_pages(2)
    pdf = make_pdf(tmp_path / "travel.pdf", pages)
    # Queued, its task not sent yet: the page is opened while it waits. (A collection made now embeds with
    # the slow server, not with the embedding space of one made before these settings.)
    collection = services.collection_for_upload(user=user, name="Travel")
    document = services.document_create(
        owner=user, collection=collection, enqueue=False, file=SimpleUploadedFile("travel.pdf", pdf.read_bytes())
    )
    page = signed_in_page
    page.goto(live_server.url + f"/documents/{document.pk}/")
    status = page.locator("#document-status")
    expect(status.locator(".badge")).to_have_text("Queued")
    expect(status.locator(".progress-text")).to_have_text("Waiting for a worker")
    expect(status.locator("progress")).to_be_visible()
    expect(status.get_by_role("button", name="Cancel")).to_be_visible()
    expect(status.get_by_role("button", name="Re-ingest")).to_have_count(0)
    expect(page.locator("article.chunk")).to_have_count(0)

    assert send_ingestion(document)  # a worker takes it now

    expect(status.locator(".progress-text")).to_have_text(
        re.compile(r"^Embedding \d+/\d+ chunks · \d+% · 2 pages · about \d+ s left$"), timeout=30_000
    )
    # Ready: the page is the server's again (reloaded by itself), with the new passages and no progress.
    expect(status.locator(".badge")).to_have_text("Ready", timeout=READY_TIMEOUT)
    expect(page.locator("article.chunk").first).to_contain_text("trains are booked")
    expect(status.locator("progress")).to_have_count(0)
    expect(status.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(status.get_by_role("button", name="Re-ingest")).to_be_visible()
    expect(status).to_contain_text(f"{Document.objects.get(pk=document.pk).chunk_count} chunks")


def test_cancel_on_a_documents_page_stops_the_run_and_stays_on_the_page(signed_in_page, user, collection, live_server):
    document = services.document_create(
        owner=user, collection=collection, enqueue=False,
        file=SimpleUploadedFile("itinerary.txt", b"Trains to Lyon leave at nine."),
    )
    page = signed_in_page
    page.goto(live_server.url + f"/documents/{document.pk}/")
    status = page.locator("#document-status")

    status.get_by_role("button", name="Cancel").click()

    expect(page.locator(".messages")).to_contain_text("Cancelled the processing of “itinerary”.")
    assert page.url == live_server.url + f"/documents/{document.pk}/"
    expect(status.locator(".badge")).to_have_text("Cancelled")
    expect(status.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(status.get_by_role("button", name="Re-ingest")).to_be_visible()
    assert Document.objects.get(pk=document.pk).status == Document.Status.CANCELLED
