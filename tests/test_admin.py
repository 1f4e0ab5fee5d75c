"""documents/admin.py: deleting in the admin goes through ingest.document_delete (file, chunks, audit trail).

``admin_client`` is pytest-django's: a client signed in as the superuser ``admin``.
"""

import pytest
from django.core.files.base import ContentFile

from audit.models import AuditEvent
from documents import ingest
from documents.models import Chunk, Document

pytestmark = pytest.mark.django_db


def ready_document(user, collection, name="memo.txt", body=b"The memo about archives and backups."):
    document = ingest.document_create(owner=user, collection=collection, file=ContentFile(body, name=name),
                                      filename=name, enqueue=False)
    return ingest.document_ingest(document_id=document.pk)


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
