"""The audit trail: uploads, deletions, re-ingestion, tokens, admin actions and sign-ins, in the admin."""

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from audit.models import AuditEvent
from core.models import ApiToken
from documents import services
from documents.models import Document

pytestmark = pytest.mark.django_db


def actions():
    return list(AuditEvent.objects.order_by("id").values_list("action", "actor_name", "object_repr"))


def test_upload_reingest_and_delete_are_recorded_with_who_and_what(client, user, collection):
    client.force_login(user)
    client.post("/documents/", {"files": [ContentFile(b"Quarterly numbers.", name="q3.txt")]},
                REMOTE_ADDR="203.0.113.7")
    document = Document.objects.get(owner=user)
    client.post(f"/documents/{document.pk}/reingest/")
    client.post(f"/documents/{document.pk}/delete/")
    assert actions() == [("sign_in", "alice", "alice"), ("upload", "alice", "q3"), ("reingest", "alice", "q3"),
                         ("delete", "alice", "q3")]
    upload = AuditEvent.objects.get(action="upload")
    assert upload.ip == "203.0.113.7" and upload.detail["filename"] == "q3.txt"
    assert upload.object_type == "documents.document" and upload.object_id == str(document.pk)


def test_api_deletion_and_token_creation_are_recorded(client, user, collection):
    call_command("create_api_token", user.username, stdout=None)
    raw = ApiToken.issue(user=user)[1]
    document = services.document_create(owner=user, collection=collection, file=ContentFile(b"x", name="a.txt"),
                                      enqueue=False)
    client.delete(f"/api/v1/documents/{document.pk}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert [a for a, _, _ in actions()] == ["token_created", "token_created", "upload", "delete"]


def test_admin_actions_and_sign_ins_land_in_the_trail_which_is_read_only(client, django_user_model, user):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "admin-password-123")
    assert not client.login(username="root", password="wrong")
    assert client.login(username="root", password="admin-password-123")
    client.post("/admin/documents/collection/add/", {"name": "Board", "owner": user.pk, "distance": "cosine"})
    response = client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "ci"})
    assert response.status_code == 200  # the page that shows the new token once
    token = ApiToken.objects.get(name="ci")
    client.post("/admin/core/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    recorded = actions()
    assert ("sign_in_failed", "", "root") in recorded and ("sign_in", "root", "root") in recorded
    assert ("admin_add", "root", "Board") in recorded
    assert ("token_created", "root", str(token)) in recorded and ("token_revoked", "root", str(token)) in recorded
    page = client.get("/admin/audit/auditevent/")
    assert page.status_code == 200 and b"Board" in page.content
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    event = AuditEvent.objects.first()
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.is_superuser
