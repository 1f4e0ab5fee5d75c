"""documents/admin.py: deleting in the admin goes through services.document_delete (file, chunks, audit trail).

``admin_client`` is pytest-django's: a client signed in as the superuser ``admin``.
"""

import re

import pytest
from django.core.files.base import ContentFile

from audit.models import AuditEvent
from core.models import ApiToken, hash_token
from documents import pipeline, services
from documents.models import Chunk, Document

pytestmark = pytest.mark.django_db


def ready_document(user, collection, name="memo.txt", body=b"The memo about archives and backups."):
    document = services.document_create(owner=user, collection=collection, file=ContentFile(body, name=name),
                                      filename=name, enqueue=False)
    return pipeline.document_ingest(document_id=document.pk)


def deleted_by_the_admin(document) -> bool:
    return AuditEvent.objects.filter(action="delete", actor_name="admin", object_id=str(document.pk)).exists()


def test_the_delete_selected_action_removes_files_chunks_and_records_who(
    admin_client, user, collection, django_capture_on_commit_callbacks,
):
    documents = [ready_document(user, collection, name=f"memo-{i}.txt", body=f"Memo number {i}.".encode())
                 for i in range(2)]
    storage, names = documents[0].file.storage, [document.file.name for document in documents]
    assert all(storage.exists(name) for name in names)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/documents/document/", {
            "action": "delete_selected", "_selected_action": [d.pk for d in documents], "post": "yes",
        })
    assert response.status_code == 302
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert not any(storage.exists(name) for name in names)
    assert all(deleted_by_the_admin(document) for document in documents)


def test_the_delete_page_removes_the_file_chunks_and_records_who(
    admin_client, user, collection, django_capture_on_commit_callbacks,
):
    document = ready_document(user, collection)
    storage, name = document.file.storage, document.file.name
    assert storage.exists(name) and document.chunk_count > 0
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/documents/document/{document.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists() and not Chunk.objects.exists()
    assert not storage.exists(name)
    assert deleted_by_the_admin(document)


def test_a_token_created_in_the_admin_is_shown_in_the_page_only_never_in_a_cookie_or_the_session(admin_client, user):
    response = admin_client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "ci"})
    assert response.status_code == 200
    raw = re.search(r'value="([^"]+)"[^>]*id="raw-token"', response.content.decode()).group(1)
    token = ApiToken.objects.get(name="ci")
    assert token.key_hash == hash_token(raw) and token.user == user
    assert "no-store" in response["Cache-Control"]
    assert all(raw not in morsel.value for morsel in response.cookies.values())  # no "messages" cookie holds it
    assert all(raw not in str(value) for value in admin_client.session.values())
    later = admin_client.get("/admin/core/apitoken/")
    assert raw not in later.content.decode()  # shown once
    assert admin_client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
