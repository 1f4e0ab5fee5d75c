"""documents/admin.py: deleting in the admin goes through services.document_delete (file, chunks, audit trail).

``admin_client`` is pytest-django's: a client signed in as the superuser ``admin``.
"""

import re

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile

from audit.models import AuditEvent
from core import services as services_core
from core.models import ApiToken, hash_token
from documents import pipeline, services
from documents.models import Chunk, Collection, Document

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


def staff_with(django_user_model, username, *codenames):
    member = django_user_model.objects.create_user(username, f"{username}@example.com", "x", is_staff=True)
    member.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return member


def test_staff_who_may_only_view_cannot_run_the_actions_that_change(client, django_user_model, user, collection):
    """Django offers an action to anyone who may open the list, which viewing allows: re-ingest, cancel and revoke
    ask for "change" (a view-only helpdesk account once could re-queue, cancel or revoke anybody's)."""
    ready = ready_document(user, collection)
    queued = services.document_create(owner=user, collection=collection, filename="later.txt",
                                      file=ContentFile(b"Not processed yet.", name="later.txt"), enqueue=False)
    token, _ = ApiToken.issue(user=user, name="alice's laptop")
    client.force_login(staff_with(django_user_model, "helpdesk", "view_document", "view_apitoken"))
    for url, action, selected in [
        ("/admin/documents/document/", "reingest", ready.pk),
        ("/admin/documents/document/", "cancel_ingestion", queued.pk),
        ("/admin/core/apitoken/", "revoke", token.pk),
    ]:
        listed = client.get(url)
        assert listed.status_code == 200 and f'value="{action}"' not in listed.content.decode()
        client.post(url, {"action": action, "_selected_action": [selected], "index": 0})
    ready.refresh_from_db(), queued.refresh_from_db(), token.refresh_from_db()
    assert (ready.status, queued.status, token.revoked_at) == (Document.Status.READY, Document.Status.QUEUED, None)

    client.force_login(staff_with(django_user_model, "operator", "view_document", "change_document"))
    client.post("/admin/documents/document/", {"action": "cancel_ingestion", "_selected_action": [queued.pk]})
    queued.refresh_from_db()
    assert queued.status == Document.Status.CANCELLED  # with the permission, the action runs


def test_staff_who_may_add_tokens_issue_them_for_themselves_only(client, django_user_model, user, collection):
    """A token acts as its user everywhere: a staff member allowed to add tokens, not a superuser, once issued one for
    Alice in the admin, was shown its secret and read her private documents with it."""
    private = ready_document(user, Collection.objects.create(name="Alice's private", owner=user))
    clerk = staff_with(django_user_model, "clerk", "add_apitoken", "view_apitoken")
    client.force_login(clerk)
    form = client.get("/admin/core/apitoken/add/").content.decode()
    assert f'<option value="{clerk.pk}" selected>clerk</option>' in form and "alice" not in form
    refused = client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "support"})
    assert refused.status_code == 200 and "raw_token" not in (refused.context or {})
    assert not ApiToken.objects.filter(user=user).exists()
    own = client.post("/admin/core/apitoken/add/", {"user": clerk.pk, "name": "mine"})
    raw = own.context["raw_token"]
    assert client.get(f"/api/v1/documents/{private.pk}", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 404
    with pytest.raises(services_core.TokenRefused, match="Only a superuser"):
        services_core.token_create(user=user, name="support", actor=clerk)
