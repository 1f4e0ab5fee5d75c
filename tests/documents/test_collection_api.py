"""/api/v1/collections: list, create, and members (GET/POST/DELETE) and invitations (GET/DELETE) for the owner;
/api/v1/invitations: the caller's, accepted or declined by them only."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from core.models import ApiToken
from documents import sharing
from documents.models import Collection, Invitation

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "x")


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}


def test_the_owner_invites_the_invitee_accepts_and_the_owner_unshares_through_the_api(client, user, bob, collection):
    headers, bobs = bearer(user), bearer(bob)
    url = f"/api/v1/collections/{collection.pk}/members"
    invited = client.post(url, {"member": "bob@example.com"}, content_type="application/json", **headers)
    assert invited.status_code == 202
    body = invited.json()
    invitation = Invitation.objects.get()
    assert body.pop("created_at").startswith(str(invitation.created_at.year))
    assert body == {  # not bob's address
        "id": invitation.pk, "collection_id": collection.pk, "collection_name": "Handbook", "owner": "alice",
        "invitee": "bob",
    }
    assert client.get(url, **headers).json() == []  # invited is not a member
    assert client.get(f"/api/v1/collections/{collection.pk}", **bobs).status_code == 404
    assert [i["invitee"] for i in client.get(f"/api/v1/collections/{collection.pk}/invitations", **headers).json()] == [
        "bob"
    ]
    again = client.post(url, {"member": "bob"}, content_type="application/json", **headers)
    assert again.status_code == 409
    assert again.json() == {"detail": "bob is already invited: they see the collection once they accept."}

    mine = client.get("/api/v1/invitations", **bobs).json()
    assert [(i["id"], i["collection_name"], i["owner"], i["invitee"]) for i in mine] == [
        (invitation.pk, "Handbook", "alice", "bob")
    ]
    accepted = client.post(f"/api/v1/invitations/{invitation.pk}/accept", **bobs)
    assert accepted.status_code == 200
    joined = accepted.json()
    assert (joined["id"], joined["is_owner"], joined["owner"]) == (collection.pk, False, "alice")
    assert client.get("/api/v1/invitations", **bobs).json() == []
    assert client.get(url, **headers).json() == [{"id": bob.pk, "username": "bob"}]
    assert client.get(f"/api/v1/collections/{collection.pk}/invitations", **headers).json() == []
    member = client.post(url, {"member": "bob"}, content_type="application/json", **headers)
    assert member.status_code == 409 and member.json() == {"detail": "bob is already a member."}

    assert client.delete(f"{url}/{bob.pk}", **headers).status_code == 204
    assert not collection.members.exists()
    assert client.delete(f"{url}/{bob.pk}", **headers).status_code == 404
    assert client.delete(f"{url}/{user.pk}", **headers).status_code == 400
    missing = client.post(url, {"member": "nobody"}, content_type="application/json", **headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "No user with that username or e-mail."}
    owner = client.post(url, {"member": "alice"}, content_type="application/json", **headers)
    assert owner.status_code == 409 and owner.json() == {"detail": "alice owns this collection."}
    assert list(
        AuditEvent.objects.filter(action__startswith="member_").order_by("id").values_list("action", flat=True)
    ) == [
        "member_invited",
        "member_joined",
        "member_removed",
    ]


def test_the_invitee_declines_through_the_api(client, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    bobs = bearer(bob)
    assert client.post(f"/api/v1/invitations/{invitation.pk}/decline", **bobs).status_code == 204
    assert not Invitation.objects.exists() and not collection.members.exists()
    gone = client.post(f"/api/v1/invitations/{invitation.pk}/accept", **bobs)
    assert gone.status_code == 404 and gone.json()["detail"].startswith("No such invitation")


def test_the_owner_withdraws_an_invitation_through_the_api(client, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    headers = bearer(user)
    url = f"/api/v1/collections/{collection.pk}/invitations/{invitation.pk}"
    assert client.delete(url, **headers).status_code == 204
    assert client.delete(url, **headers).status_code == 404
    assert client.post(f"/api/v1/invitations/{invitation.pk}/accept", **bearer(bob)).status_code == 404
    assert not collection.members.exists()


def test_nobody_but_the_invitee_answers_an_invitation_through_the_api(client, user, bob, other_user, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    for someone in (user, other_user):
        headers = bearer(someone)
        assert client.get("/api/v1/invitations", **headers).json() == []
        for answer in ("accept", "decline"):
            response = client.post(f"/api/v1/invitations/{invitation.pk}/{answer}", **headers)
            assert response.status_code == 404, (someone, answer)
    assert client.post(f"/api/v1/invitations/{invitation.pk}/accept").status_code == 401  # a token is needed
    assert Invitation.objects.get() == invitation and not collection.members.exists()


def test_the_schema_documents_invitations(client, user):
    schema = client.get("/api/v1/openapi.json").json()
    add = schema["paths"]["/api/v1/collections/{collection_id}/members"]["post"]["responses"]
    assert "201" not in add and add["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/InvitationOut")
    assert set(schema["components"]["schemas"]["InvitationOut"]["properties"]) == {
        "id", "collection_id", "collection_name", "owner", "invitee", "created_at"
    }
    for path in ("/api/v1/invitations", "/api/v1/invitations/{invitation_id}/accept",
                 "/api/v1/invitations/{invitation_id}/decline",
                 "/api/v1/collections/{collection_id}/invitations/{invitation_id}"):
        assert path in schema["paths"], path


def test_a_member_reads_the_collection_but_not_its_members_nor_changes_them(
    client, user, bob, other_user, collection, django_user_model
):
    collection.members.add(bob, other_user)
    headers = bearer(bob)
    body = client.get(f"/api/v1/collections/{collection.pk}", **headers).json()
    assert body["owner"] == "alice" and body["is_owner"] is False and body["member_count"] is None
    url = f"/api/v1/collections/{collection.pk}/members"
    assert client.get(url, **headers).status_code == 403
    assert client.post(url, {"member": "bob"}, content_type="application/json", **headers).status_code == 403
    assert client.delete(f"{url}/{other_user.pk}", **headers).status_code == 403
    assert collection.members.count() == 2
    carol = django_user_model.objects.create_user("carol", "carol@example.com", "x")
    invitation = sharing.member_invite(collection=collection, identifier="carol", actor=user)
    invitations = f"/api/v1/collections/{collection.pk}/invitations"
    assert client.get(invitations, **headers).status_code == 403
    assert client.delete(f"{invitations}/{invitation.pk}", **headers).status_code == 403
    assert Invitation.objects.get().invitee == carol
    assert not AuditEvent.objects.filter(action="invitation_withdrawn").exists()


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
