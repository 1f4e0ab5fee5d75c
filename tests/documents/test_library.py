"""The library page: search, filters, sort, paging, size and type, bulk delete / re-ingest, download;
a document's page: its actions and its passages a page at a time around a cited one."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AuditEvent
from documents import pipeline, selectors, services
from documents.exceptions import CorruptDocument, UnexpectedFailure
from documents.models import Collection, Document
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def make(user, collection, name="plan.txt", body=b"Quarterly plan notes.", ingest=True):
    document = services.document_create(
        owner=user, collection=collection, file=SimpleUploadedFile(name, body), enqueue=False
    )
    return pipeline.document_ingest(document_id=document.pk) if ingest else document


def titles(client, **query) -> list[str]:
    html = client.get(reverse("documents:list"), query).content.decode()
    return re.findall(r'<td class="title" data-label="Title"><a href="[^"]+">([^<]+)</a>', html)


@pytest.fixture
def library(user, other_user, collection):
    """Alice's handbook (text, Markdown, a damaged PDF, a queued note) and Mallory's shared collection."""
    shared = Collection.objects.create(name="Shared", owner=other_user)
    shared.members.add(user)
    make(user, collection, "Travel policy.txt", b"Trains under four hours." * 40)
    make(user, collection, "onboarding.md", b"# Onboarding\n\nMeet your buddy.")
    make(user, collection, "broken.pdf", b"%PDF-1.4\n" + bytes(300))
    make(user, collection, "expenses.txt", b"Receipts within a month.", ingest=False)
    make(other_user, shared, "Travel budget.txt", b"1000 EUR a year.")
    return {"handbook": collection, "shared": shared}


def test_search_matches_titles_in_any_case(signed_in, library):
    assert sorted(titles(signed_in, q="TRAVEL")) == ["Travel budget", "Travel policy"]


def test_filters_by_collection_status_and_file_type(signed_in, library):
    assert titles(signed_in, collection=library["shared"].pk) == ["Travel budget"]
    assert titles(signed_in, status="failed") == ["broken"]
    assert titles(signed_in, status="queued") == ["expenses"]
    assert titles(signed_in, type="markdown") == ["onboarding"]
    assert titles(signed_in, type="pdf") == ["broken"]
    assert sorted(titles(signed_in, type="text", collection=library["handbook"].pk)) == ["Travel policy", "expenses"]


def test_the_type_filter_and_the_type_column_agree_on_names_and_content_types(user, collection):
    rows = {  # name, content type -> the kind both say
        ("report.PDF", ""): "pdf",
        ("notes", "text/plain"): "text",
        ("page.htm", "text/plain"): "html",
        ("README", ""): "",
        ("old.md", "application/pdf"): "markdown",
        ("scan", "application/pdf"): "pdf",
    }
    for n, ((name, content_type), _) in enumerate(rows.items()):
        Document.objects.create(
            owner=user,
            collection=collection,
            title=name,
            original_filename=name,
            content_type=content_type,
            sha256=f"{n:064x}",
            file=f"documents/x/{n}",
        )
    for document in Document.objects.all():
        assert selectors.kind_of(document) == rows[(document.original_filename, document.content_type)]
    for kind in selectors.KIND_LABELS:
        filtered = selectors.library_documents(user=user, filters=selectors.LibraryFilters(kind=kind))
        assert {d.title for d in filtered} == {name for (name, _), of in rows.items() if of == kind}, kind


def test_unknown_filter_values_are_ignored_not_an_error(signed_in, library):
    assert len(titles(signed_in, status="nonsense", type="exe", collection="x", sort="evil", page="zz")) == 5


def test_search_text_postgresql_cannot_hold_finds_nothing_rather_than_failing(signed_in, library):
    response = signed_in.get("/documents/?q=tra%00vel&collection=%C2%B2")
    assert response.status_code == 200 and "No documents match these filters" in response.content.decode()
    assert len(titles(signed_in, collection="²")) == 5  # not an id: no filter


def test_a_collection_the_user_cannot_read_shows_nothing(signed_in, library, other_user):
    private = Collection.objects.create(name="Mallory only", owner=other_user)
    make(other_user, private, "secret.txt", b"secret")
    assert titles(signed_in, collection=private.pk) == []


def test_sorts_by_name_date_and_size_both_ways(signed_in, library):
    by_name = ["broken", "expenses", "onboarding", "Travel budget", "Travel policy"]
    assert titles(signed_in, sort="name") == by_name
    assert titles(signed_in, sort="-name") == by_name[::-1]
    newest_first = ["Travel budget", "expenses", "broken", "onboarding", "Travel policy"]
    assert titles(signed_in) == newest_first
    assert titles(signed_in, sort="date") == newest_first[::-1]
    assert (
        titles(signed_in, sort="-size")[0] == "Travel policy" and titles(signed_in, sort="size")[-1] == "Travel policy"
    )


def test_rows_show_size_and_file_type(signed_in, library):
    html = signed_in.get(reverse("documents:list"), {"q": "Travel policy"}).content.decode()
    assert '<td class="kind" data-label="Type">Text</td>' in html
    assert '<td class="size" data-label="Size">960\xa0bytes</td>' in html


def test_pages_keep_the_query_string_across_links(signed_in, user, collection, monkeypatch):
    monkeypatch.setattr(selectors, "LIBRARY_PAGE_SIZE", 2)
    for n in range(5):
        make(user, collection, f"note {n}.txt", f"Note {n}".encode(), ingest=False)
    make(user, collection, "other.txt", b"other", ingest=False)
    response = signed_in.get(reverse("documents:list"), {"q": "note", "sort": "name", "page": "2"})
    html = response.content.decode()
    assert titles(signed_in, q="note", sort="name", page="2") == ["note 2", "note 3"]
    assert "Page 2 of 3" in html and "3–4 of 5 documents" in html
    assert 'href="?q=note&amp;sort=name&amp;page=3" rel="next"' in html
    assert 'href="?q=note&amp;sort=name&amp;page=1" rel="prev"' in html
    # The bulk form carries the same list back; sorting goes back to the first page.
    assert (
        '<input type="hidden" name="q" value="note">' in html and '<input type="hidden" name="page" value="2">' in html
    )
    assert 'href="?q=note&amp;sort=-name"' in html
    assert titles(signed_in, q="note", sort="name", page="99") == ["note 4"]  # past the end: the last page


def test_no_match_offers_to_clear_the_filters(signed_in, library):
    html = signed_in.get(reverse("documents:list"), {"q": "zebra"}).content.decode()
    assert "No documents match these filters" in html and 'href="/documents/">clear filters</a>' in html
    assert "No documents yet" not in html


def checked(client, action, ids, confirmed=False, **back):
    data = {"action": action, "ids": ids, **back}
    if confirmed:
        data["confirmed"] = "yes"
    return client.post(reverse("documents:bulk"), data)


def test_bulk_delete_asks_first_then_deletes_only_what_the_user_manages(signed_in, user, library, other_user):
    ours = list(Document.objects.filter(owner=user, title__in=["broken", "onboarding"]))
    theirs = Document.objects.get(title="Travel budget")  # readable, but Mallory's
    ids = [d.pk for d in ours] + [theirs.pk]

    confirm = checked(signed_in, "delete", ids, q="a")
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Delete 2 documents?" in html
    assert "1 of the checked documents is left unchanged. Only the uploader or the collection" in html
    assert Document.objects.filter(pk__in=ids).count() == 3  # nothing happened yet

    done = checked(signed_in, "delete", ids, confirmed=True, q="a")
    assert done.status_code == 302 and done.url == "/documents/?q=a"
    assert set(Document.objects.filter(pk__in=ids).values_list("title", flat=True)) == {"Travel budget"}
    event = AuditEvent.objects.get(action="bulk_delete")
    assert event.actor == user and sorted(event.detail["documents"]) == sorted(d.pk for d in ours)
    assert event.detail["refused"] == [theirs.pk]
    assert AuditEvent.objects.filter(action="delete").count() == 2  # and each document's own event


def test_bulk_reingest_leaves_files_that_cannot_change(signed_in, user, library, django_capture_on_commit_callbacks):
    empty = make(user, library["handbook"], "empty.txt", b"")
    assert empty.status == "failed"
    broken = Document.objects.get(title="broken")
    assert broken.error == CorruptDocument.PDF
    policy = Document.objects.get(title="Travel policy")
    queued = Document.objects.get(title="expenses")
    confirm = checked(signed_in, "reingest", [empty.pk, broken.pk, policy.pk, queued.pk]).content.decode()
    assert "Re-ingest 1 document?" in confirm and "already waiting to be processed" in confirm
    assert "2 of the checked documents are left unchanged. Processing again would give the same result" in confirm
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = checked(signed_in, "reingest", [empty.pk, broken.pk, policy.pk, queued.pk], confirmed=True)
    assert response.status_code == 302 and len(callbacks) == 1
    assert Document.objects.get(pk=policy.pk).status == "queued"
    assert Document.objects.get(pk=broken.pk).status == Document.Status.FAILED
    assert Document.objects.get(pk=empty.pk).status == Document.Status.FAILED
    event = AuditEvent.objects.get(action="bulk_reingest")
    assert event.detail["documents"] == [policy.pk]
    assert sorted(event.detail["refused"]) == sorted([broken.pk, empty.pk, queued.pk])


def test_bulk_actions_say_why_when_nothing_was_checked(signed_in, library):
    response = signed_in.post(reverse("documents:bulk"), {"action": "delete"}, follow=True)
    assert "Check at least one document first." in response.content.decode()
    response = signed_in.post(reverse("documents:bulk"), {"action": "rename", "ids": [1]}, follow=True)
    assert "Choose Delete or Re-ingest" in response.content.decode()


def test_bulk_delete_of_another_users_documents_changes_nothing(client, user, other_user, collection):
    document = make(user, collection)
    client.force_login(other_user)
    response = checked(client, "delete", [document.pk], confirmed=True)
    assert response.status_code == 302
    assert Document.objects.filter(pk=document.pk).exists()
    assert AuditEvent.objects.get(action="bulk_delete").detail == {"documents": [], "refused": []}


def test_rows_offer_reingest_only_where_it_can_help(signed_in, library):
    html = signed_in.get(reverse("documents:list")).content.decode()
    for title, offered in (("broken", False), ("Travel policy", True), ("expenses", True)):
        pk = Document.objects.get(title=title).pk
        assert (f'action="/documents/{pk}/reingest/"' in html) is offered, title


def row_html(html: str, pk: int) -> str:
    return re.search(rf'<tr data-document-id="{pk}".*?</tr>', html, re.S).group(0)


def test_a_pending_row_offers_cancel_not_reingest(signed_in, library):
    queued = Document.objects.get(title="expenses")
    row = row_html(signed_in.get(reverse("documents:list")).content.decode(), queued.pk)
    cancel = re.search(r'<form [^>]*action="/documents/\d+/cancel/[^>]*>', row).group(0)
    reingest = re.search(r'<form [^>]*action="/documents/\d+/reingest/[^>]*>', row).group(0)
    # Re-ingest is there for the page to show when the run ends where it can help, hidden until then.
    assert " hidden" not in cancel and " hidden" in reingest


def test_the_status_json_says_where_reingest_is_offered(signed_in, library):
    expected = {"broken": False, "Travel policy": True, "expenses": False}  # damaged; ready; queued
    ids = {Document.objects.get(title=title).pk: title for title in expected}
    documents = signed_in.get(reverse("documents:status"), {"id": list(ids)}).json()["documents"]
    assert {ids[d["id"]]: d["reingest_offered"] for d in documents} == expected


def test_a_single_reingest_that_cannot_help_is_refused_with_the_reason(signed_in, user, collection):
    empty = make(user, collection, "empty.txt", b"")
    response = signed_in.post(reverse("documents:reingest", args=[empty.pk]), follow=True)
    assert "was not queued again" in response.content.decode()
    assert Document.objects.get(pk=empty.pk).status == Document.Status.FAILED


def test_download_gives_readers_the_original_file_as_an_attachment(client, user, other_user, library):
    document = Document.objects.get(title="Travel policy")
    client.force_login(other_user)  # a member of nothing of Alice's: not found
    assert client.get(reverse("documents:download", args=[document.pk])).status_code == 404
    theirs = Document.objects.get(title="Travel budget")
    client.force_login(user)  # a member of Mallory's shared collection may read, so download
    response = client.get(reverse("documents:download", args=[theirs.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="Travel budget.txt"'
    assert b"".join(response.streaming_content) == b"1000 EUR a year."
    assert response["Content-Type"] == "text/plain" and response["X-Content-Type-Options"] == "nosniff"


def test_download_names_the_file_as_uploaded_and_sends_a_claimed_type_only_if_known(signed_in, user, collection):
    upload = SimpleUploadedFile("Reisekosten «2026».txt", b"Bahn statt Flug.", content_type="text/html; x=<script>")
    document = services.document_create(owner=user, collection=collection, file=upload, enqueue=False)
    response = signed_in.get(reverse("documents:download", args=[document.pk]))
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''Reisekosten%20%C2%AB2026%C2%BB.txt"
    assert response["Content-Type"] == "application/octet-stream"


def test_files_are_not_served_at_a_media_url(client, user, library, settings):
    document = Document.objects.get(title="Travel policy")
    client.force_login(user)
    assert document.file.name.startswith("documents/")
    for prefix in ("/media/", "/" + settings.MEDIA_URL.lstrip("/"), "/static/"):
        assert client.get(prefix + document.file.name).status_code == 404


def test_a_failed_documents_page_offers_reingest_when_it_can_help_and_delete(signed_in, user, collection):
    failed = make(user, collection, "flaky.txt", b"Flaky text.", ingest=False)
    Document.objects.filter(pk=failed.pk).update(status="failed", error=UnexpectedFailure.default_message)
    html = signed_in.get(reverse("documents:detail", args=[failed.pk])).content.decode()
    assert f'action="/documents/{failed.pk}/reingest/"' in html and f'action="/documents/{failed.pk}/delete/"' in html
    response = signed_in.post(reverse("documents:reingest", args=[failed.pk]), {"next": "detail"})
    assert response.url == reverse("documents:detail", args=[failed.pk])

    broken = make(user, collection, "broken.pdf", b"%PDF-1.4\n" + bytes(300))
    html = signed_in.get(reverse("documents:detail", args=[broken.pk])).content.decode()
    assert (
        f'action="/documents/{broken.pk}/reingest/"' not in html and f'action="/documents/{broken.pk}/delete/"' in html
    )
    assert "would fail the same way" in html


def test_a_pending_documents_page_shows_its_progress_and_cancel_and_polls_its_status(signed_in, user, collection):
    queued = make(user, collection, "queued.txt", b"Waiting in line.", ingest=False)
    html = signed_in.get(reverse("documents:detail", args=[queued.pk])).content.decode()
    assert f'id="document-status" data-document-id="{queued.pk}" data-status="queued"' in html
    assert "<progress" in html and "Waiting for a worker" in html
    assert f'action="/documents/{queued.pk}/cancel/"' in html
    assert f'action="/documents/{queued.pk}/reingest/"' not in html
    assert 'src="/static/js/documents.js" data-status-url="/documents/status.json"' in html

    response = signed_in.post(reverse("documents:cancel", args=[queued.pk]), {"next": "detail"})
    assert response.url == reverse("documents:detail", args=[queued.pk])
    html = signed_in.get(response.url).content.decode()
    assert "<progress" not in html and "documents.js" not in html and f'/documents/{queued.pk}/cancel/' not in html
    assert f'action="/documents/{queued.pk}/reingest/"' in html and "Cancelled by alice." in html


def test_a_members_view_of_a_document_offers_download_but_no_actions(client, user, other_user, collection):
    collection.members.add(other_user)
    document = make(user, collection)
    client.force_login(other_user)
    html = client.get(reverse("documents:detail", args=[document.pk])).content.decode()
    assert f'href="/documents/{document.pk}/download/"' in html
    assert "/delete/" not in html and "/reingest/" not in html


@pytest.fixture
def long_document(user, collection, monkeypatch):
    monkeypatch.setattr(selectors, "CHUNK_PAGE_SIZE", 3)
    text = "\n\n".join(f"Paragraph {n}. " + "Words about the topic of this paragraph. " * 60 for n in range(12))
    document = add_text_document(user, collection, "novel", text)
    assert document.chunk_count >= 7, document.chunk_count
    return document


def test_the_detail_page_shows_a_page_of_passages_with_links_to_the_others(signed_in, long_document):
    url = reverse("documents:detail", args=[long_document.pk])
    html = signed_in.get(url).content.decode()
    assert html.count('<article id="chunk-') == 3 and 'rel="next"' in html and 'rel="prev"' not in html
    pages = -(-long_document.chunk_count // 3)
    html = signed_in.get(url, {"page": pages}).content.decode()
    assert 'rel="prev"' in html and 'rel="next"' not in html and f"page {pages} of {pages}" in html


def test_a_cited_chunk_opens_its_page_highlighted(signed_in, long_document):
    chunk = long_document.chunks.get(ordinal=4)  # on the second page of three
    html = signed_in.get(
        reverse("documents:detail", args=[long_document.pk]), {"chunk": chunk.pk, "page": 1}
    ).content.decode()
    assert f'id="chunk-{chunk.pk}" class="chunk highlighted"' in html and "page 2 of" in html
    assert html.count('<article id="chunk-') == 3
    assert 'href="?page=1" rel="prev"' in html and 'href="?page=3" rel="next"' in html


def test_a_chunk_of_another_document_is_ignored(signed_in, user, collection, long_document):
    other = make(user, collection, "other.txt", b"Other text.")
    html = signed_in.get(
        reverse("documents:detail", args=[long_document.pk]), {"chunk": other.chunks.get().pk}
    ).content.decode()
    assert "highlighted" not in html and "page 1 of" in html


def test_the_detail_page_costs_the_same_queries_for_few_or_many_passages(
    signed_in, user, collection, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(selectors, "CHUNK_PAGE_SIZE", 50)
    short = add_text_document(user, collection, "short", "A single short paragraph.")
    long = add_text_document(
        user, collection, "long", "\n\n".join(f"Paragraph {n}. " + "Words. " * 400 for n in range(12))
    )
    assert short.chunk_count == 1 and long.chunk_count > 10

    def page(document) -> str:
        chunk = document.chunks.order_by("-ordinal").first()
        response = signed_in.get(reverse("documents:detail", args=[document.pk]), {"chunk": chunk.pk})
        assert response.status_code == 200
        return response.content.decode()

    # session, user, document, the chunk's ordinal, 2 counts, page; similar documents: 2 and the savepoint's 2;
    # the visit noted (recommendations)
    with django_assert_max_num_queries(13) as few:
        page(short)
    with django_assert_max_num_queries(len(few)):  # no query per passage
        shown = page(long).count('<article id="chunk-')
    assert shown == (long.chunk_count - 1) % 50 + 1 and shown > 5  # the last page, full of passages
