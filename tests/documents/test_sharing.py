"""Sharing collections from the app: create, invite (the invitee accepts, declines or the owner withdraws), remove
members, the collections pages, the audit trail."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from documents import sharing
from documents.models import Collection, Invitation
from documents.search import search
from documents.search.filters import Filters, UnknownCollection
from tests.documents_factory import add_text_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "Bob@Example.com", "correct horse battery")


def invite_and_accept(collection, owner, invitee):
    """How someone becomes a member from the app: the owner invites, the invitee accepts."""
    invitation = sharing.member_invite(collection=collection, identifier=invitee.get_username(), actor=owner)
    return sharing.invitation_accept(invitation_id=invitation.pk, user=invitee)


# --- services ---------------------------------------------------------------------------------------------


def test_an_invitee_is_found_by_username_or_by_e_mail_in_any_case(collection, user, bob):
    assert sharing.member_invite(collection=collection, identifier="bob", actor=user).invitee == bob
    Invitation.objects.all().delete()
    invitation = sharing.member_invite(collection=collection, identifier="  bob@EXAMPLE.com ", actor=user)
    assert (invitation.collection, invitation.invitee, invitation.invited_by) == (collection, bob, user)
    assert list(Invitation.objects.values_list("invitee", flat=True)) == [bob.pk]


def test_an_invitation_gives_nothing_to_read_until_the_invitee_accepts(collection, user, bob):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    assert not collection.members.exists()
    assert list(Collection.objects.visible_to(bob)) == []
    assert list(sharing.collections_for_user(user=bob)) == []
    assert sharing.invitation_accept(invitation_id=invitation.pk, user=bob) == collection
    assert list(collection.members.all()) == [bob] and not Invitation.objects.exists()
    assert list(Collection.objects.visible_to(bob)) == [collection]


def test_declining_grants_nothing_and_forgets_the_invitation(collection, user, bob):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    assert sharing.invitation_decline(invitation_id=invitation.pk, user=bob) == collection
    assert not Invitation.objects.exists() and not collection.members.exists()
    with pytest.raises(sharing.NoSuchInvitation):
        sharing.invitation_accept(invitation_id=invitation.pk, user=bob)
    sharing.member_invite(collection=collection, identifier="bob", actor=user)  # may be invited again


def test_only_the_invitee_answers_an_invitation(collection, user, bob, other_user):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    for someone in (user, other_user):  # its owner included: an owner cannot accept for someone
        with pytest.raises(sharing.NoSuchInvitation):
            sharing.invitation_accept(invitation_id=invitation.pk, user=someone)
        with pytest.raises(sharing.NoSuchInvitation):
            sharing.invitation_decline(invitation_id=invitation.pk, user=someone)
    assert Invitation.objects.get() == invitation
    assert not collection.members.exists()


def test_an_answered_invitation_cannot_be_answered_again(collection, user, bob):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    sharing.invitation_accept(invitation_id=invitation.pk, user=bob)
    for answer in (sharing.invitation_accept, sharing.invitation_decline):
        with pytest.raises(sharing.NoSuchInvitation, match="No such invitation"):
            answer(invitation_id=invitation.pk, user=bob)
    assert list(collection.members.all()) == [bob]


def test_the_owner_withdraws_an_invitation_of_their_collection_only(collection, user, bob):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    other = sharing.collection_create(owner=user, name="Other")
    with pytest.raises(sharing.NoSuchInvitation):  # the invitation is looked up within the collection named
        sharing.invitation_withdraw(collection=other, invitation_id=invitation.pk, actor=user)
    assert sharing.invitation_withdraw(collection=collection, invitation_id=invitation.pk, actor=user) == bob
    with pytest.raises(sharing.NoSuchInvitation):
        sharing.invitation_accept(invitation_id=invitation.pk, user=bob)
    assert not collection.members.exists()


def test_invitations_go_with_a_deleted_or_deactivated_invitee_or_a_deleted_collection(
    collection, user, bob, other_user
):
    sharing.member_invite(collection=collection, identifier="bob", actor=user)
    sharing.member_invite(collection=collection, identifier="mallory", actor=user)
    other = sharing.collection_create(owner=user, name="Other")
    sharing.member_invite(collection=other, identifier="bob", actor=user)
    bob.is_active = False
    bob.save()
    assert list(Invitation.objects.values_list("invitee__username", flat=True)) == ["mallory"]
    other_user.delete()
    assert not Invitation.objects.exists()
    bob.is_active = True
    bob.save()
    sharing.member_invite(collection=other, identifier="bob", actor=user)
    other.delete()
    assert not Invitation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_invitation_withdrawn_while_its_invitee_accepts_makes_no_member(user, bob, collection):
    """Both lock the collection's row, then the invitation's, and look the invitation up again once they hold them:
    the acceptance that waited finds it withdrawn (no member, no "joined" event), and neither deadlocks."""
    import threading

    from django.db import connections, transaction

    from tests.conftest import wait_until_a_connection_waits_for_a_lock

    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    outcome: list[object] = []

    def accept() -> None:
        try:
            outcome.append(sharing.invitation_accept(invitation_id=invitation.pk, user=bob))
        except sharing.NoSuchInvitation as refused:
            outcome.append(refused)
        finally:
            connections.close_all()

    accepting = threading.Thread(target=accept)
    with transaction.atomic():  # the owner's withdrawal, under way: the collection's row is locked
        Collection.objects.select_for_update().get(pk=collection.pk)
        accepting.start()
        wait_until_a_connection_waits_for_a_lock("the acceptance")
        sharing.invitation_withdraw(collection=collection, invitation_id=invitation.pk, actor=user)
    accepting.join(30)
    assert not accepting.is_alive() and [type(o) for o in outcome] == [sharing.NoSuchInvitation]
    assert not collection.members.exists() and not Invitation.objects.exists()
    assert not AuditEvent.objects.filter(action="member_joined").exists()


@pytest.mark.parametrize("identifier", ["nobody", "nobody@example.com", "", "   ", "bo\x00b", "x" * 300])
def test_no_such_user_is_a_clear_error(collection, user, identifier):
    with pytest.raises(sharing.NoSuchUser, match="No user with that username or e-mail."):
        sharing.member_invite(collection=collection, identifier=identifier, actor=user)
    assert not Invitation.objects.exists()


def test_an_inactive_user_is_not_found(collection, user, bob):
    bob.is_active = False
    bob.save()
    with pytest.raises(sharing.NoSuchUser):
        sharing.member_invite(collection=collection, identifier="bob", actor=user)


def test_an_e_mail_shared_by_two_people_asks_for_the_username(collection, user, bob, django_user_model):
    django_user_model.objects.create_user("bobby", "bob@example.com", "x")
    with pytest.raises(sharing.AmbiguousEmail, match="by their username"):
        sharing.member_invite(collection=collection, identifier="bob@example.com", actor=user)


def test_inviting_someone_twice_a_member_or_the_owner_is_refused(collection, user, bob):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    with pytest.raises(sharing.AlreadyInvited, match="bob is already invited: they see the collection once they"):
        sharing.member_invite(collection=collection, identifier="bob@example.com", actor=user)
    assert Invitation.objects.count() == 1
    sharing.invitation_accept(invitation_id=invitation.pk, user=bob)
    with pytest.raises(sharing.AlreadyMember, match="bob is already a member."):
        sharing.member_invite(collection=collection, identifier="bob@example.com", actor=user)
    with pytest.raises(sharing.AlreadyMember, match="alice owns this collection."):
        sharing.member_invite(collection=collection, identifier="alice", actor=user)
    assert collection.members.count() == 1 and not Invitation.objects.exists()
    assert sharing.AlreadyInvited.status_code == sharing.AlreadyMember.status_code == 409


def test_the_owner_cannot_be_removed_and_a_non_member_is_not_found(collection, user, bob):
    with pytest.raises(sharing.OwnerCannotBeRemoved):
        sharing.member_remove(collection=collection, user_id=user.pk, actor=user)
    with pytest.raises(sharing.NotAMember):
        sharing.member_remove(collection=collection, user_id=bob.pk, actor=user)


def test_collection_names_are_checked_and_unique_per_owner(user, bob):
    sharing.collection_create(owner=user, name=" Board ", description="Minutes")
    assert Collection.objects.get(owner=user).name == "Board"
    with pytest.raises(sharing.NameTaken, match="already have a collection named “Board”"):
        sharing.collection_create(owner=user, name="Board")
    sharing.collection_create(owner=bob, name="Board")  # another owner may
    for name in ("", "  ", "a\x00b", "x" * 201):
        with pytest.raises(sharing.InvalidName):
            sharing.collection_create(owner=user, name=name)


def test_every_change_is_audited(client, user, bob):
    collection = sharing.collection_create(owner=user, name="Board")
    invite_and_accept(collection, user, bob)
    sharing.member_remove(collection=collection, user_id=bob.pk, actor=user)
    declined = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    sharing.invitation_decline(invitation_id=declined.pk, user=bob)
    withdrawn = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    sharing.invitation_withdraw(collection=collection, invitation_id=withdrawn.pk, actor=user)
    events = AuditEvent.objects.filter(object_type="documents.collection").order_by("id")
    assert [(e.action, e.actor_name, e.object_id, e.detail.get("member")) for e in events] == [
        ("collection_created", "alice", str(collection.pk), None),
        ("member_invited", "alice", str(collection.pk), "bob"),
        ("member_joined", "bob", str(collection.pk), "bob"),
        ("member_removed", "alice", str(collection.pk), "bob"),
        ("member_invited", "alice", str(collection.pk), "bob"),
        ("invitation_declined", "bob", str(collection.pk), "bob"),
        ("member_invited", "alice", str(collection.pk), "bob"),
        ("invitation_withdrawn", "alice", str(collection.pk), "bob"),
    ]


def test_a_removed_member_no_longer_finds_the_collections_passages(collection, user, bob):
    add_text_document(user, collection, "pay", "The bonus pool for the platform team is confidential.")
    invite_and_accept(collection, user, bob)
    assert [hit.document_title for hit in search(user=bob, query="bonus pool platform team")] == ["pay"]
    sharing.member_remove(collection=collection, user_id=bob.pk, actor=user)
    assert search(user=bob, query="bonus pool platform team") == []
    assert search(user=bob, query="bonus pool", filters=Filters(collections=(collection.pk,))) == []
    with pytest.raises(UnknownCollection):
        search(user=bob, query="bonus pool", filters=Filters(collection=str(collection.pk)))
    assert search(user=user, query="bonus pool platform team")  # the owner still does


def test_a_removed_members_conversation_on_the_collection_no_longer_cites_it(collection, user, bob):
    from chat import services as chat
    from chat.models import Citation, Conversation, Message

    add_text_document(user, collection, "pay", "The bonus pool for the platform team is confidential.")
    invite_and_accept(collection, user, bob)
    conversation = Conversation.objects.create(owner=bob, collection=collection)
    list(chat.ask(conversation=conversation, question="What about the bonus pool of the platform team?"))
    assert Citation.objects.filter(message__conversation=conversation).exists()
    sharing.member_remove(collection=collection, user_id=bob.pk, actor=user)
    list(chat.ask(conversation=conversation, question="What about the bonus pool of the platform team?"))
    answer = Message.objects.filter(conversation=conversation, role="assistant").order_by("id").last()
    assert "confidential" not in answer.content and not answer.citation_set.exists()


# --- pages ------------------------------------------------------------------------------------------------


def test_the_collections_page_lists_owned_and_shared(client, user, bob, collection):
    theirs = Collection.objects.create(name="Bob's notes", owner=bob)
    theirs.members.add(user)
    Collection.objects.create(name="Bob's private", owner=bob)
    client.force_login(user)
    page = client.get("/collections/").content.decode()
    owned, shared = page.split('id="owned-collections"')[1].split('id="shared-collections"')
    assert "Handbook" in owned and "private" in owned
    assert "Bob&#x27;s notes" in shared and "owned by bob" in shared
    assert "Bob&#x27;s private" not in page


def test_a_collection_is_created_from_the_page(client, user):
    client.force_login(user)
    response = client.post("/collections/", {"name": "Board", "description": "Minutes"})
    collection = Collection.objects.get(owner=user, name="Board")
    assert response.status_code == 302 and response["Location"] == f"/collections/{collection.pk}/"
    again = client.post("/collections/", {"name": "Board"})
    assert again.status_code == 409 and "You already have a collection named “Board”." in again.content.decode()
    assert client.post("/collections/", {"name": ""}).status_code == 400


def test_the_owner_invites_the_invitee_accepts_and_the_owner_removes_them_from_the_pages(
    client, user, bob, collection
):
    client.force_login(user)
    response = client.post(f"/collections/{collection.pk}/members/", {"member": "bob@example.com"}, follow=True)
    assert "Invited bob: they see the collection once they accept." in response.content.decode()
    assert not collection.members.exists()
    invitation = Invitation.objects.get(collection=collection, invitee=bob)
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert f'id="invitation-{invitation.pk}"' in page and "Withdraw" in page and f'id="member-{bob.pk}"' not in page

    client.force_login(bob)
    assert client.get(f"/collections/{collection.pk}/").status_code == 404  # nothing to read before accepting
    listed = client.get("/collections/").content.decode()
    invited = listed.split('id="invitations"')[1].split("</ul>")[0]
    assert "Handbook" in invited and "from alice" in invited and "Accept" in invited and "Decline" in invited
    response = client.post(f"/collections/invitations/{invitation.pk}/accept/", follow=True)
    assert response.redirect_chain[-1][0] == f"/collections/{collection.pk}/"
    assert "You joined “Handbook”: its documents are now in your searches." in response.content.decode()
    assert list(collection.members.all()) == [bob] and not Invitation.objects.exists()
    assert 'id="invitations"' not in client.get("/collections/").content.decode()

    client.force_login(user)
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert f'id="member-{bob.pk}"' in page and 'id="invitations"' not in page
    response = client.post(f"/collections/{collection.pk}/members/{bob.pk}/remove/", follow=True)
    assert "bob can no longer read “Handbook”." in response.content.decode()
    assert not collection.members.exists()


def test_the_invitee_declines_from_the_page(client, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    client.force_login(bob)
    response = client.post(f"/collections/invitations/{invitation.pk}/decline/", follow=True)
    assert response.redirect_chain[-1][0] == "/collections/"
    assert "You declined the invitation to “Handbook”." in response.content.decode()
    assert not Invitation.objects.exists() and not collection.members.exists()
    assert client.post(f"/collections/invitations/{invitation.pk}/accept/").status_code == 404


def test_the_owner_withdraws_an_invitation_from_the_page(client, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    client.force_login(user)
    response = client.post(f"/collections/{collection.pk}/invitations/{invitation.pk}/withdraw/", follow=True)
    assert "Withdrew the invitation of bob to “Handbook”." in response.content.decode()
    assert not Invitation.objects.exists()
    again = client.post(f"/collections/{collection.pk}/invitations/{invitation.pk}/withdraw/")
    assert again.status_code == 404 and "No such invitation" in again.content.decode()
    client.force_login(bob)
    assert 'id="invitations"' not in client.get("/collections/").content.decode()
    assert client.post(f"/collections/invitations/{invitation.pk}/accept/").status_code == 404
    assert not collection.members.exists()


def test_nobody_but_the_invitee_answers_an_invitation_from_the_page(client, user, bob, other_user, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    for someone in (user, other_user):
        client.force_login(someone)
        for answer in ("accept", "decline"):
            assert client.post(f"/collections/invitations/{invitation.pk}/{answer}/").status_code == 404
        assert 'id="invitations"' not in client.get("/collections/").content.decode()
    client.force_login(bob)
    assert client.get(f"/collections/invitations/{invitation.pk}/accept/").status_code == 405  # a POST only
    assert Invitation.objects.get() == invitation and not collection.members.exists()


def test_a_member_cannot_withdraw_invitations(client, user, bob, other_user, collection):
    collection.members.add(other_user)
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    client.force_login(other_user)
    assert 'id="invitations"' not in client.get(f"/collections/{collection.pk}/").content.decode()
    response = client.post(f"/collections/{collection.pk}/invitations/{invitation.pk}/withdraw/")
    assert response.status_code == 403 and Invitation.objects.filter(pk=invitation.pk).exists()


def test_inviting_someone_by_username_does_not_tell_the_owner_their_e_mail(client, user, bob, collection):
    """Anyone can be invited by username: were the page (or the API, tests/documents/test_collection_api.py) to show
    invitees' or members' addresses, any user could learn anyone's by inviting them to an empty collection."""
    client.force_login(user)
    response = client.post(f"/collections/{collection.pk}/members/", {"member": "bob"}, follow=True)
    assert "Invited bob" in response.content.decode()
    invitation = Invitation.objects.get()
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert f'id="invitation-{invitation.pk}"' in page and "bob@example.com" not in page.lower()
    sharing.invitation_accept(invitation_id=invitation.pk, user=bob)
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert f'id="member-{bob.pk}"' in page and "bob@example.com" not in page.lower()


@pytest.mark.parametrize(
    ("member", "status", "message"),
    [
        ("nobody", 404, "No user with that username or e-mail."),
        ("alice", 409, "alice owns this collection."),
        ("bob", 409, "bob is already invited: they see the collection once they accept."),
        ("mallory", 409, "mallory is already a member."),
    ],
)
def test_inviting_errors_are_shown_on_the_page(client, user, bob, other_user, collection, member, status, message):
    sharing.member_invite(collection=collection, identifier="bob", actor=user)
    collection.members.add(other_user)
    client.force_login(user)
    response = client.post(f"/collections/{collection.pk}/members/", {"member": member})
    assert response.status_code == status and message in response.content.decode()
    assert f'value="{member}"' in response.content.decode()  # what was typed is kept


def test_the_owner_cannot_remove_themselves_from_the_page(client, user, collection):
    client.force_login(user)
    response = client.post(f"/collections/{collection.pk}/members/{user.pk}/remove/")
    assert response.status_code == 400 and "The owner cannot be removed" in response.content.decode()


def test_a_member_sees_the_owner_read_only_and_cannot_change_members(client, user, bob, other_user, collection):
    collection.members.add(bob, other_user)
    client.force_login(bob)
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert "Owned by <strong>alice</strong>" in page
    assert 'id="member-form"' not in page and "Remove" not in page
    assert "mallory" not in page  # who else reads it is the owner's to know
    added = client.post(f"/collections/{collection.pk}/members/", {"member": "nobody-else"})
    removed = client.post(f"/collections/{collection.pk}/members/{other_user.pk}/remove/")
    assert added.status_code == removed.status_code == 403
    assert "Only the collection&#x27;s owner can remove members." in removed.content.decode()
    assert set(collection.members.all()) == {bob, other_user}


def test_a_member_leaves_a_collection_shared_with_them_and_no_longer_finds_it(client, user, bob, collection):
    add_text_document(user, collection, "minutes.txt", "The board approved the zeppelin purchase in May.")
    collection.members.add(bob)
    assert search(user=bob, query="zeppelin purchase")
    client.force_login(bob)
    page = client.get(f"/collections/{collection.pk}/").content.decode()
    assert 'id="leave-form"' in page and "Leave this collection" in page
    response = client.post(f"/collections/{collection.pk}/members/{bob.pk}/remove/", follow=True)
    assert response.redirect_chain[-1][0] == "/collections/"
    assert "You left “Handbook”" in response.content.decode()
    assert not collection.members.exists()
    assert search(user=bob, query="zeppelin purchase") == []
    assert client.get(f"/collections/{collection.pk}/").status_code == 404
    event = AuditEvent.objects.filter(action="member_removed").latest("pk")
    assert event.actor_id == bob.pk
    client.force_login(user)  # the owner has no "leave" (they cannot be removed)
    assert 'id="leave-form"' not in client.get(f"/collections/{collection.pk}/").content.decode()


def test_someone_who_cannot_read_the_collection_gets_404(client, other_user, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    client.force_login(other_user)
    assert client.get(f"/collections/{collection.pk}/").status_code == 404
    assert client.post(f"/collections/{collection.pk}/members/", {"member": "mallory"}).status_code == 404
    assert client.post(f"/collections/{collection.pk}/members/{user.pk}/remove/").status_code == 404
    assert client.post(f"/collections/{collection.pk}/invitations/{invitation.pk}/withdraw/").status_code == 404
    assert not collection.members.exists()
    assert list(Invitation.objects.values_list("invitee", flat=True)) == [bob.pk]


def test_changes_need_a_csrf_token(user, bob, collection):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/collections/{collection.pk}/members/", {"member": "bob"}).status_code == 403
    assert strict.post("/collections/", {"name": "Board"}).status_code == 403
    assert not collection.members.exists() and Collection.objects.count() == 1
    assert not Invitation.objects.exists()
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    assert strict.post(f"/collections/{collection.pk}/invitations/{invitation.pk}/withdraw/").status_code == 403
    strict.force_login(bob)
    assert strict.post(f"/collections/invitations/{invitation.pk}/accept/").status_code == 403
    assert strict.post(f"/collections/invitations/{invitation.pk}/decline/").status_code == 403
    assert Invitation.objects.get() == invitation and not collection.members.exists()


def test_the_admin_still_changes_members(admin_client, user, bob, collection):
    response = admin_client.post(
        f"/admin/documents/collection/{collection.pk}/change/",
        {"name": collection.name, "description": "", "distance": "cosine", "owner": user.pk, "members": [bob.pk]},
    )
    assert response.status_code == 302
    assert list(collection.members.all()) == [bob]


def test_the_admin_lists_invitations_read_only(admin_client, user, bob, collection):
    invitation = sharing.member_invite(collection=collection, identifier="bob", actor=user)
    listed = admin_client.get("/admin/documents/invitation/").content.decode()
    assert "Handbook" in listed and "bob" in listed
    assert admin_client.get("/admin/documents/invitation/add/").status_code == 403
    changed = admin_client.post(
        f"/admin/documents/invitation/{invitation.pk}/change/",
        {"collection": collection.pk, "invitee": user.pk, "invited_by": user.pk},
    )
    assert changed.status_code == 403
    assert Invitation.objects.get().invitee == bob and not collection.members.exists()


def page_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_collections_page_costs_the_same_queries_for_one_collection_or_many(client, user, bob, django_user_model):
    client.force_login(user)
    first = sharing.collection_create(owner=user, name="first")
    sharing.member_invite(collection=sharing.collection_create(owner=bob, name="bob's"), identifier="alice", actor=bob)
    client.get("/collections/")
    one = page_queries(client, "/collections/")
    people = [django_user_model.objects.create_user(f"member{n}", f"m{n}@example.com", "x") for n in range(4)]
    for n in range(6):
        mine = sharing.collection_create(owner=user, name=f"mine {n}")
        mine.members.add(*people)
        theirs = sharing.collection_create(owner=people[n % 4], name=f"theirs {n}")
        theirs.members.add(user, bob)
        inviting = sharing.collection_create(owner=people[n % 4], name=f"inviting {n}")
        sharing.member_invite(collection=inviting, identifier="alice", actor=people[n % 4])
    sharing.member_invite(collection=first, identifier="bob", actor=user)
    page = client.get("/collections/").content.decode()
    assert page.count('id="invitation-') == 7
    assert page_queries(client, "/collections/") == one


def test_a_collection_page_costs_the_same_queries_for_one_member_or_many(client, user, collection, django_user_model):
    client.force_login(user)
    collection.members.add(django_user_model.objects.create_user("member", "m@example.com", "x"))
    django_user_model.objects.create_user("invited", "i@example.com", "x")
    sharing.member_invite(collection=collection, identifier="invited", actor=user)
    client.get(f"/collections/{collection.pk}/")
    one = page_queries(client, f"/collections/{collection.pk}/")
    collection.members.add(
        *[django_user_model.objects.create_user(f"m{n}", f"m{n}@example.com", "x") for n in range(8)]
    )
    for n in range(8):
        django_user_model.objects.create_user(f"i{n}", f"i{n}@example.com", "x")
        sharing.member_invite(collection=collection, identifier=f"i{n}", actor=user)
    assert client.get(f"/collections/{collection.pk}/").content.decode().count('id="invitation-') == 9
    assert page_queries(client, f"/collections/{collection.pk}/") == one


def test_the_counts_on_the_page_are_right(client, user, bob, collection):
    add_text_document(user, collection, "a", "Alpha.")
    add_text_document(user, collection, "b", "Beta.")
    collection.members.add(bob)
    (listed,) = sharing.collections_for_user(user=user)
    assert (listed.document_count, listed.member_count) == (2, 1)
    (as_bob,) = sharing.collections_for_user(user=bob)
    assert as_bob.pk == collection.pk


def test_attempts_to_add_members_are_rate_limited_on_the_page_and_the_api(client, user, bob, collection, settings):
    from core.models import ApiToken

    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "share": "2/h"}
    client.force_login(user)
    url = f"/collections/{collection.pk}/members/"
    assert client.post(url, {"member": "nobody"}).status_code == 404  # a miss counts: probing is what is limited
    assert client.post(url, {"member": "bob"}).status_code == 302
    refused = client.post(url, {"member": "mallory"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many attempts to add members: the limit is 2 per hour." in refused.content.decode()
    raw = ApiToken.issue(user=user)[1]
    api = client.post(
        f"/api/v1/collections/{collection.pk}/members",
        {"member": "mallory"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert api.status_code == 429 and api.json()["detail"].startswith("Too many attempts to add members")
    assert list(Invitation.objects.values_list("invitee", flat=True)) == [bob.pk]
    assert not collection.members.exists()
