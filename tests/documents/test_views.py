"""The document pages: login, upload of several files, live status JSON, detail, delete; /healthz."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from documents import pipeline, services
from documents.models import Collection, Document

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def make(user, collection, body=b"Quarterly plan notes.", name="plan.txt", ingest_now=True):
    document = services.document_create(
        owner=user, collection=collection, file=SimpleUploadedFile(name, body), enqueue=False
    )
    if ingest_now:
        pipeline.document_ingest(document_id=document.pk)
    return document


def test_pages_require_sign_in(client):
    response = client.get(reverse("documents:list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_empty_library_explains_what_to_do(signed_in):
    response = signed_in.get(reverse("documents:list"))
    assert response.status_code == 200
    assert b"No documents yet" in response.content


def test_uploading_several_files_queues_each(signed_in, user, django_capture_on_commit_callbacks):
    files = [SimpleUploadedFile("a.txt", b"alpha"), SimpleUploadedFile("b.md", b"# Beta\n\nbeta")]
    with django_capture_on_commit_callbacks() as callbacks:
        response = signed_in.post(reverse("documents:list"), {"files": files, "collection": "Team"}, follow=True)
    assert response.status_code == 200
    assert Document.objects.filter(owner=user, collection__name="Team").count() == 2
    assert len(callbacks) == 2
    assert b"a.txt: queued for processing." in response.content


def test_an_upload_that_creates_its_collection_says_so_on_the_page(signed_in, user, collection):
    new = signed_in.post(reverse("documents:list"), {"files": [SimpleUploadedFile("a.txt", b"alpha")],
                                                     "collection": "Handbok"}, follow=True).content.decode()
    assert "New collection “Handbok” created." in new and "a.txt: queued for processing." in new
    again = signed_in.post(reverse("documents:list"), {"files": [SimpleUploadedFile("b.txt", b"beta")],
                                                       "collection": "Handbok"}, follow=True).content.decode()
    assert "created." not in again and "b.txt: queued for processing." in again


def test_an_upload_that_creates_its_collection_says_so_in_its_json(signed_in, user, collection):
    body = post_files(signed_in, SimpleUploadedFile("a.txt", b"alpha"), collection="Handbok").json()
    created = Collection.objects.get(owner=user, name="Handbok")
    assert body["message"] == "New collection “Handbok” created."
    assert body["collection"] == {"id": created.pk, "name": "Handbok", "created": True}
    body = post_files(signed_in, SimpleUploadedFile("b.txt", b"beta"), collection=collection.name).json()
    assert body["message"] == "" and body["collection"] == {"id": collection.pk, "name": collection.name,
                                                            "created": False}


def upload_field(client, **query) -> str:
    html = client.get(reverse("documents:list"), query).content.decode()
    return re.search(r'<input name="collection" id="upload-collection"[^>]* value="([^"]*)"', html).group(1)


def test_the_upload_field_offers_the_collection_uploaded_to_last_not_the_first_by_name(signed_in, user):
    assert upload_field(signed_in) == services.DEFAULT_COLLECTION_NAME  # owns none yet
    alpha, zeta = (Collection.objects.create(owner=user, name=name) for name in ("Alpha", "Zeta"))
    assert upload_field(signed_in) == "Zeta"  # never uploaded: the newest, made to be filled
    make(user, zeta, name="z.txt", ingest_now=False)
    make(user, alpha, name="a.txt", ingest_now=False)
    assert upload_field(signed_in) == "Alpha"
    make(user, zeta, name="z2.txt", body=b"more", ingest_now=False)
    assert upload_field(signed_in) == "Zeta"
    assert upload_field(signed_in, collection=alpha.pk) == "Alpha"  # the one the list is filtered on


def test_the_upload_field_never_offers_a_collection_shared_with_the_user(signed_in, user, other_user):
    theirs = Collection.objects.create(owner=other_user, name="Theirs")
    theirs.members.add(user)
    make(other_user, theirs, name="t.txt", ingest_now=False)
    Collection.objects.create(owner=user, name="Mine")
    assert upload_field(signed_in, collection=theirs.pk) == "Mine"


def test_upload_errors_are_shown_per_file(signed_in, user, collection):
    make(user, collection, body=b"dup", name="first.txt", ingest_now=False)
    response = signed_in.post(
        reverse("documents:list"),
        {"files": [SimpleUploadedFile("again.txt", b"dup")], "collection": collection.name}, follow=True,
    )
    assert "again.txt: This file is already in the collection" in response.content.decode()


def post_files(client, *files, collection="Handbook"):
    return client.post(reverse("documents:list"), {"files": list(files), "collection": collection},
                       HTTP_ACCEPT="application/json")


def test_the_page_answers_409_when_its_only_file_is_already_there(signed_in, user, collection):
    first = make(user, collection, body=b"dup", name="first.txt", ingest_now=False)
    response = post_files(signed_in, SimpleUploadedFile("again.txt", b"dup"))
    assert response.status_code == 409  # as the API answers; not 202 with nothing accepted
    body = response.json()
    assert body["detail"].startswith("again.txt: This file is already in the collection “Handbook”")
    (result,) = body["results"]
    assert result == {"name": "again.txt", "ok": False, "status": 409, "detail": result["detail"],
                      "existing_id": first.pk}


def test_the_page_answers_413_when_every_file_is_too_large(signed_in, user, settings):
    settings.MAX_UPLOAD_BYTES = 10
    response = post_files(signed_in, SimpleUploadedFile("a.txt", b"x" * 20), SimpleUploadedFile("b.txt", b"y" * 30))
    assert response.status_code == 413
    assert [result["status"] for result in response.json()["results"]] == [413, 413]
    assert "a.txt: The file is larger than the limit of 10 bytes" in response.json()["detail"]
    assert "b.txt: " in response.json()["detail"]
    assert Document.objects.count() == 0


def test_the_page_answers_400_with_each_reason_when_every_file_is_refused_differently(
    signed_in, user, collection, settings
):
    make(user, collection, body=b"dup", name="first.txt", ingest_now=False)
    settings.MAX_UPLOAD_BYTES = 10
    response = post_files(signed_in, SimpleUploadedFile("big.txt", b"x" * 20), SimpleUploadedFile("again.txt", b"dup"))
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "big.txt: The file is larger than the limit" in detail and "again.txt: This file is already in" in detail
    assert sorted(result["status"] for result in response.json()["results"]) == [409, 413]


def test_the_page_answers_202_with_each_files_result_when_some_were_accepted(signed_in, user, collection):
    make(user, collection, body=b"dup", name="first.txt", ingest_now=False)
    response = post_files(signed_in, SimpleUploadedFile("new.txt", b"new"), SimpleUploadedFile("again.txt", b"dup"))
    assert response.status_code == 202
    new, again = response.json()["results"]
    assert new["ok"] and new["status"] == 202 and new["document"]["title"] == "new"
    assert not again["ok"] and again["status"] == 409 and "already in the collection" in again["detail"]
    assert "detail" not in response.json()  # the page shows each file's line, not a summary besides


def test_list_shows_status_progress_and_error(signed_in, user, collection):
    make(user, collection)
    failed = make(user, collection, body=b"%PDF-1.4\n" + b"\x00" * 100, name="tool.pdf")  # damaged
    html = signed_in.get(reverse("documents:list")).content.decode()
    assert f'data-document-id="{failed.pk}" data-status="failed"' in html
    assert failed.error in html or failed.error.replace("'", "&#x27;") in html
    assert "1 chunk" in html


def test_status_json_reports_progress_for_the_callers_documents_only(signed_in, user, other_user, collection):
    mine = make(user, collection)
    from documents.models import Collection

    theirs = make(other_user, Collection.objects.create(name="Theirs", owner=other_user), body=b"secret")
    data = signed_in.get(reverse("documents:status"), {"id": [mine.pk, theirs.pk]}).json()
    assert [d["id"] for d in data["documents"]] == [mine.pk]
    assert data["documents"][0] | {"progress": 1.0, "status": "ready"} == data["documents"][0]


def test_detail_shows_chunks_and_highlights_the_cited_one(signed_in, user, collection):
    document = make(user, collection)
    chunk = document.chunks.get()
    html = signed_in.get(reverse("documents:detail", args=[document.pk]), {"chunk": chunk.pk}).content.decode()
    assert f'id="chunk-{chunk.pk}" class="chunk highlighted"' in html
    assert "Quarterly plan notes." in html


def test_other_users_get_404_for_detail_delete_and_reingest(client, user, other_user, collection):
    document = make(user, collection)
    client.force_login(other_user)
    assert client.get(reverse("documents:detail", args=[document.pk])).status_code == 404
    assert client.post(reverse("documents:delete", args=[document.pk])).status_code == 404
    assert client.post(reverse("documents:reingest", args=[document.pk])).status_code == 404
    assert Document.objects.filter(pk=document.pk).exists()


def test_owner_can_delete(signed_in, user, collection):
    document = make(user, collection)
    signed_in.post(reverse("documents:delete", args=[document.pk]))
    assert not Document.objects.filter(pk=document.pk).exists()


def test_healthz_reports_each_component(client):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["database"] == "ok" and body["redis"] == "ok"
    assert body["pgvector"].startswith("0.")
    assert isinstance(body["workers"], int)


def test_admin_lists_documents_with_status(client, django_user_model, user, collection):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    failed = make(user, collection, body=b"%PDF-1.4\n" + b"\x00" * 100, name="tool.pdf")  # damaged
    client.force_login(admin)
    html = client.get("/admin/documents/document/?status__exact=failed").content.decode()
    assert failed.title in html and "Failed" in html


def test_admin_upload_creates_and_queues_a_document(client, django_user_model, collection,
                                                    django_capture_on_commit_callbacks):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(admin)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/admin/documents/document/add/", {
            "collection": collection.pk, "file": SimpleUploadedFile("memo.txt", b"memo text"),
            "title": "", "metadata": "{}",
        })
    assert response.status_code == 302, response.content.decode()[:2000]
    document = Document.objects.get(title="memo")
    assert document.owner == admin and document.status == "queued" and len(callbacks) == 1


def test_admin_reingest_action_queues_again(client, django_user_model, user, collection,
                                            django_capture_on_commit_callbacks):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    document = make(user, collection)
    client.force_login(admin)
    with django_capture_on_commit_callbacks() as callbacks:
        client.post("/admin/documents/document/", {"action": "reingest", "_selected_action": [document.pk]})
    document.refresh_from_db()
    assert document.status == "queued" and len(callbacks) == 1


def library_of(user, other_user, collection, count: int) -> None:
    """``count`` documents of every kind the library shows: ready, failed, queued, and shared by someone else."""
    from documents.models import Collection

    shared = Collection.objects.get_or_create(name="Shared", owner=other_user)[0]
    shared.members.add(user)
    for n in range(Document.objects.count(), count):
        owner, target = (other_user, shared) if n % 3 == 2 else (user, collection)
        body = b"%PDF-1.4\n" + bytes(100) + bytes([n]) if n % 5 == 4 else f"Notes number {n}.".encode()
        make(owner, target, body=body, name=f"doc-{n}.{'pdf' if n % 5 == 4 else 'txt'}", ingest_now=n % 4 != 3)


def test_the_library_costs_the_same_queries_for_5_or_50_documents(
    signed_in, user, other_user, collection, django_assert_max_num_queries
):
    def page() -> str:
        response = signed_in.get(reverse("documents:list"))
        assert response.status_code == 200
        return response.content.decode()

    library_of(user, other_user, collection, 5)
    # session, user, collections, count, documents; recommended for you: the history, the cold start
    with django_assert_max_num_queries(7) as five:
        page()
    library_of(user, other_user, collection, 50)
    with django_assert_max_num_queries(len(five)) as fifty:  # no query per document, collection or owner
        html = page()
    assert html.count("data-document-id=") == 50
    assert 'data-status="failed"' in html and 'data-status="queued"' in html and "Re-ingest" in html
    assert "Download" in html and 'name="ids"' in html
    assert len(fifty) == len(five)


def test_status_json_costs_the_same_queries_for_1_or_30_documents(
    signed_in, user, other_user, collection, django_assert_max_num_queries
):
    def status(**params) -> list[dict]:
        response = signed_in.get(reverse("documents:status"), params)
        assert response.status_code == 200
        return response.json()["documents"]

    library_of(user, other_user, collection, 1)
    with django_assert_max_num_queries(3) as one:  # session, user, documents
        status()
    library_of(user, other_user, collection, 30)
    ids = list(Document.objects.values_list("pk", flat=True))
    with django_assert_max_num_queries(len(one)):
        assert len(status()) == 30
    with django_assert_max_num_queries(len(one)):  # the page polls with the ids it shows
        documents = status(id=ids)
    assert len(documents) == 30 and {d["collection"] for d in documents} == {"Handbook", "Shared"}


def test_signed_in_users_can_change_their_password_and_no_reset_by_mail_is_offered(client, user):
    client.force_login(user)
    assert client.get("/accounts/password_change/").status_code == 200
    response = client.post("/accounts/password_change/", {
        "old_password": "correct horse battery", "new_password1": "a-new-long-passphrase-42",
        "new_password2": "a-new-long-passphrase-42",
    })
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a-new-long-passphrase-42")
    assert client.get("/accounts/password_reset/").status_code == 404
