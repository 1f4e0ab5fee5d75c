"""/api/v1: bearer tokens, upload answering 202 at once, status, list, delete, the OpenAPI schema."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from core.models import ApiToken
from documents import pipeline, services
from documents.models import Chunk, Document

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(user):
    return ApiToken.issue(user=user)[1]


@pytest.fixture
def api(client, token):
    class Api:
        def __init__(self, raw):
            self.headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

        def get(self, url):
            return client.get(url, **self.headers)

        def post(self, url, data):
            return client.post(url, data, **self.headers)

        def delete(self, url):
            return client.delete(url, **self.headers)

    return Api(token)


def text_file(name="notes.txt", body=b"Some notes about the quarterly plan."):
    return SimpleUploadedFile(name, body, content_type="text/plain")


def test_requests_without_a_valid_token_get_401(client, user):
    assert client.get("/api/v1/documents").status_code == 401
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


def test_revoked_token_is_refused(client, user):
    from django.utils import timezone

    token, raw = ApiToken.issue(user=user)
    token.revoked_at = timezone.now()
    token.save()
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_a_deactivated_users_token_is_refused(client, user):
    raw = ApiToken.issue(user=user)[1]
    user.is_active = False
    user.save()
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_a_token_authenticates_its_user_and_records_its_use(client, user, other_user):
    from datetime import timedelta

    from django.utils import timezone

    token, raw = ApiToken.issue(user=user)
    ApiToken.issue(user=other_user)
    assert token.last_used_at is None
    response = client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200 and response.wsgi_request.user == user
    token.refresh_from_db()
    first_use = token.last_used_at
    assert first_use is not None
    client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    token.refresh_from_db()
    assert token.last_used_at == first_use  # written at most once a minute
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    token.refresh_from_db()
    assert token.last_used_at > first_use - timedelta(minutes=2) and token.last_used_at <= timezone.now()


def test_upload_answers_202_with_id_and_status(api, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/api/v1/documents", {"file": text_file(), "collection": "Plans"})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "collection", "collection_created", "message"} and body["status"] == "queued"
    document = Document.objects.get(pk=body["id"])
    assert document.owner == user and document.collection.name == "Plans" and document.collection.owner == user
    assert len(callbacks) == 1  # ingestion queued once the row is committed


def test_upload_says_when_it_created_the_collection(api, user, collection):
    body = api.post("/api/v1/documents", {"file": text_file(), "collection": "Handbok"}).json()
    assert body | {"collection": "Handbok", "collection_created": True,
                   "message": "New collection “Handbok” created."} == body
    body = api.post("/api/v1/documents", {"file": text_file(body=b"other"), "collection": collection.name}).json()
    assert body | {"collection": collection.name, "collection_created": False, "message": ""} == body


def test_upload_without_collection_goes_to_the_default_one(api):
    body = api.post("/api/v1/documents", {"file": text_file()}).json()
    assert Document.objects.get(pk=body["id"]).collection.name == services.DEFAULT_COLLECTION_NAME


def test_duplicate_upload_is_409_with_the_existing_id(api):
    first = api.post("/api/v1/documents", {"file": text_file()}).json()
    response = api.post("/api/v1/documents", {"file": text_file("copy.txt")})
    assert response.status_code == 409
    assert response.json()["existing_id"] == first["id"] and "already" in response.json()["detail"]


def test_too_large_upload_is_413_with_the_limit(api, settings):
    settings.MAX_UPLOAD_BYTES = 10
    response = api.post("/api/v1/documents", {"file": text_file()})
    assert response.status_code == 413 and "the limit of 10 bytes" in response.json()["detail"]


def test_status_list_and_delete(api, user, collection):
    document = services.document_create(
        owner=user, collection=collection, file=text_file(), enqueue=False
    )
    pipeline.document_ingest(document_id=document.pk)
    body = api.get(f"/api/v1/documents/{document.pk}").json()
    assert body["status"] == "ready" and body["chunk_count"] == 1 and body["progress"] == 1.0
    assert {"id", "title", "status", "progress", "chunk_count", "error"} <= set(body)
    assert [d["id"] for d in api.get("/api/v1/documents").json()] == [document.pk]
    assert api.delete(f"/api/v1/documents/{document.pk}").status_code == 204
    assert not Document.objects.filter(pk=document.pk).exists()
    assert Chunk.objects.filter(document_id=document.pk).count() == 0
    assert api.get(f"/api/v1/documents/{document.pk}").status_code == 404


def test_another_user_gets_404_for_my_document(client, user, other_user, collection):
    document = services.document_create(owner=user, collection=collection, file=text_file(), enqueue=False)
    raw = ApiToken.issue(user=other_user)[1]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get(f"/api/v1/documents/{document.pk}", **headers).status_code == 404
    assert client.delete(f"/api/v1/documents/{document.pk}", **headers).status_code == 404
    assert client.get("/api/v1/documents", **headers).json() == []
    assert Document.objects.filter(pk=document.pk).exists()


def test_a_member_can_read_but_not_delete(client, user, other_user, collection):
    collection.members.add(other_user)
    document = services.document_create(owner=user, collection=collection, file=text_file(), enqueue=False)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=other_user)[1]}"}
    assert client.get(f"/api/v1/documents/{document.pk}", **headers).status_code == 200
    assert client.delete(f"/api/v1/documents/{document.pk}", **headers).status_code == 403


def test_openapi_schema_is_published(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/documents" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/documents"]


def test_create_api_token_command_prints_a_working_token_last(client, user):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", user.username, stdout=out, stderr=StringIO())
    raw = out.getvalue().strip().splitlines()[-1]
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_oversized_upload_is_dropped_while_it_streams_in(api, settings, tmp_path):
    """A 1.5 MB upload over a 1 MB limit: the upload handler drops it at the limit; nothing is stored."""
    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)  # a temporary file would land here
    big = SimpleUploadedFile("big.txt", b"word " * (3 * 1024 * 1024 // 10), content_type="text/plain")
    response = api.post("/api/v1/documents", {"file": big})
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The file is larger than the limit of 1.0 MB; split it into smaller files and upload those.")
    assert list(tmp_path.iterdir()) == [] and Document.objects.count() == 0


def test_an_upload_request_longer_than_one_file_can_be_is_refused_with_the_limit(api, settings, tmp_path):
    """The API takes one file: a 3 MB request over a 1 MB limit cannot be valid and is refused unread."""
    settings.MAX_UPLOAD_BYTES = 1024 * 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    big = SimpleUploadedFile("big.txt", b"word " * (3 * 1024 * 1024 // 5), content_type="text/plain")
    response = api.post("/api/v1/documents", {"file": big})
    assert response.status_code == 413
    # The one wording of the limit (core.uploads.TOO_LARGE), wherever it is enforced.
    assert response.json()["detail"] == (
        "The file is larger than the limit of 1.0 MB; split it into smaller files and upload those.")
    assert list(tmp_path.iterdir()) == [] and Document.objects.count() == 0


def test_a_request_declaring_an_impossible_length_is_refused_unread(client, settings):
    settings.MAX_UPLOAD_BYTES = 1024
    response = client.post(
        "/api/v1/documents", data=b"x" * 10, content_type="application/octet-stream",
        CONTENT_LENGTH=str(10 * 1024 * 1024),
    )
    assert response.status_code == 413 and "larger than the limit of 1.0 KB" in response.json()["detail"]


def test_missing_file_field_is_a_clear_400(api):
    response = api.post("/api/v1/documents", {"collection": "x"})
    assert response.status_code == 400 and "`file`" in response.json()["detail"]
