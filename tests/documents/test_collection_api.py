"""/api/v1/collections: list, create, and members (GET/POST/DELETE) for the owner."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from core.models import ApiToken
from documents.models import Collection

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "x")


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}


def test_the_owner_shares_lists_and_unshares_through_the_api(client, user, bob, collection):
    headers = bearer(user)
    url = f"/api/v1/collections/{collection.pk}/members"
    added = client.post(url, {"member": "bob@example.com"}, content_type="application/json", **headers)
    assert added.status_code == 201 and added.json() == {"id": bob.pk, "username": "bob"}  # not bob's address
    assert client.get(url, **headers).json() == [added.json()]
    again = client.post(url, {"member": "bob"}, content_type="application/json", **headers)
    assert again.status_code == 409 and again.json() == {"detail": "bob is already a member."}
    assert client.delete(f"{url}/{bob.pk}", **headers).status_code == 204
    assert not collection.members.exists()
    assert client.delete(f"{url}/{bob.pk}", **headers).status_code == 404
    assert client.delete(f"{url}/{user.pk}", **headers).status_code == 400
    missing = client.post(url, {"member": "nobody"}, content_type="application/json", **headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "No user with that username or e-mail."}
    assert list(
        AuditEvent.objects.filter(action__startswith="member_").order_by("id").values_list("action", flat=True)
    ) == [
        "member_added",
        "member_removed",
    ]


def test_a_member_reads_the_collection_but_not_its_members_nor_changes_them(client, user, bob, other_user, collection):
    collection.members.add(bob, other_user)
    headers = bearer(bob)
    body = client.get(f"/api/v1/collections/{collection.pk}", **headers).json()
    assert body["owner"] == "alice" and body["is_owner"] is False and body["member_count"] is None
    url = f"/api/v1/collections/{collection.pk}/members"
    assert client.get(url, **headers).status_code == 403
    assert client.post(url, {"member": "bob"}, content_type="application/json", **headers).status_code == 403
    assert client.delete(f"{url}/{other_user.pk}", **headers).status_code == 403
    assert collection.members.count() == 2


def test_the_list_and_create(client, user, bob, collection):
    Collection.objects.create(name="Bob's", owner=bob).members.add(user)
    Collection.objects.create(name="Bob's private", owner=bob)
    headers = bearer(user)
    listed = client.get("/api/v1/collections", **headers).json()
    assert [(c["name"], c["owner"], c["is_owner"]) for c in listed] == [
        ("Bob's", "bob", False),
        ("Handbook", "alice", True),
    ]
    created = client.post("/api/v1/collections", {"name": "Board"}, content_type="application/json", **headers)
    assert created.status_code == 201 and created.json()["name"] == "Board" and created.json()["member_count"] == 0
    taken = client.post("/api/v1/collections", {"name": "Board"}, content_type="application/json", **headers)
    assert taken.status_code == 409
    assert (
        client.post("/api/v1/collections", {"name": "a\x00"}, content_type="application/json", **headers).status_code
        == 400
    )


def test_text_postgresql_cannot_store_is_a_clear_error_not_a_500(client, user, collection):
    headers = bearer(user)
    for name in ("\ud800", "Board\x00"):
        response = client.post("/api/v1/collections", {"name": name}, content_type="application/json", **headers)
        assert response.status_code == 400, name
    lone = client.post(
        f"/api/v1/collections/{collection.pk}/members",
        {"member": "bob\ud800"},
        content_type="application/json",
        **headers,
    )
    assert lone.status_code == 404 and lone.json() == {"detail": "No user with that username or e-mail."}
    described = client.post(
        "/api/v1/collections",
        {"name": "Notes", "description": "a\ud800b\x00c"},
        content_type="application/json",
        **headers,
    )
    assert described.status_code == 201 and described.json()["description"] == "abc"
