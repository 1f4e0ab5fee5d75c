"""/api/v1/collections: the caller's collections, creating one, and (for its owner) who may read one and who is
invited; /api/v1/invitations: the invitations waiting for the caller's answer, accepted or declined by them only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from core import ratelimit
from documents import sharing
from documents.models import Collection, Invitation
from documents.selectors import collection_for_user

router = Router(tags=["collections"])
invitations_router = Router(tags=["invitations"])


class CollectionOut(Schema):
    id: int
    name: str
    description: str
    owner: str
    is_owner: bool
    document_count: int
    # Only the owner learns how many others read it (as on the page); null for members.
    member_count: int | None


class CollectionIn(Schema):
    name: str
    description: str = ""


class MemberIn(Schema):
    member: str  # a username or an e-mail address


class MemberOut(Schema):
    # No e-mail address: adding anyone by username would otherwise tell an owner their address.
    id: int
    username: str


class InvitationOut(Schema):
    # Usernames only, as MemberOut: inviting by e-mail tells the owner nothing more.
    id: int
    collection_id: int
    collection_name: str
    owner: str
    invitee: str
    created_at: datetime


class Problem(Schema):
    detail: str


def _out(collection: Collection, user: Any) -> dict[str, Any]:
    is_owner = collection.owner_id == user.pk
    return {
        "id": collection.pk,
        "name": collection.name,
        "description": collection.description,
        "owner": collection.owner.get_username(),
        "is_owner": is_owner,
        "document_count": collection.document_count,  # type: ignore[attr-defined]  # annotated by the selector
        "member_count": collection.member_count if is_owner else None,  # type: ignore[attr-defined]
    }


def _member(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.get_username()}


def _invitation(invitation: Invitation, *, owner: Any, invitee: Any) -> dict[str, Any]:
    return {
        "id": invitation.pk,
        "collection_id": invitation.collection_id,
        "collection_name": invitation.collection.name,
        "owner": owner.get_username(),
        "invitee": invitee.get_username(),
        "created_at": invitation.created_at,
    }


@router.get("", response=list[CollectionOut])
def list_collections(request):
    """Every collection the caller may read: their own and those shared with them."""
    return [_out(collection, request.user) for collection in sharing.collections_for_user(user=request.user)]


@router.post("", response={201: CollectionOut, 400: Problem, 409: Problem})
def create_collection(request, body: CollectionIn):
    """Create a collection owned by the caller; 409 if they already have one of that name."""
    try:
        collection = sharing.collection_create(owner=request.user, name=body.name, description=body.description)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(
        201, _out(get_object_or_404(sharing.collections_for_user(user=request.user), pk=collection.pk), request.user)
    )


@router.get("/{collection_id}", response=CollectionOut)
def get_collection(request, collection_id: int):
    # 404 unless the caller may read it: collections_for_user is Collection.objects.visible_to, with counts.
    return _out(get_object_or_404(sharing.collections_for_user(user=request.user), pk=collection_id), request.user)


@router.get("/{collection_id}/members", response={200: list[MemberOut], 403: Problem})
def list_members(request, collection_id: int):
    """Who the collection is shared with (its owner only)."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("see who else can read it")})
    return Status(200, [_member(member) for member in sharing.members_of(collection)])


@router.post(
    "/{collection_id}/members",
    response={202: InvitationOut, 403: Problem, 400: Problem, 404: Problem, 409: Problem, 429: Problem},
)
def add_member(request, collection_id: int, body: MemberIn):
    """Invite a user, by username or e-mail, to read the collection (its owner only): 202, the invitation. They
    read nothing of it until they accept it (POST /api/v1/invitations/{id}/accept); 409 if they are a member or
    invited already."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("add members")})
    allowed, retry_after = ratelimit.hit("share", request.user)
    if not allowed:
        return ratelimit.refused(request, "share", retry_after)
    try:
        invitation = sharing.member_invite(collection=collection, identifier=body.member, actor=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(202, _invitation(invitation, owner=request.user, invitee=invitation.invitee))


@router.get("/{collection_id}/invitations", response={200: list[InvitationOut], 403: Problem})
def list_invitations(request, collection_id: int):
    """The collection's invitations not yet accepted or declined (its owner only)."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("see who is invited")})
    return Status(
        200,
        [_invitation(i, owner=request.user, invitee=i.invitee) for i in sharing.invitations_of(collection)],
    )


@router.delete(
    "/{collection_id}/invitations/{invitation_id}", response={204: None, 403: Problem, 404: Problem}
)
def withdraw_invitation(request, collection_id: int, invitation_id: int):
    """Withdraw an invitation not yet answered (the collection's owner only)."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("withdraw invitations")})
    try:
        sharing.invitation_withdraw(collection=collection, invitation_id=invitation_id, actor=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(204, None)


@router.delete("/{collection_id}/members/{user_id}", response={204: None, 400: Problem, 403: Problem, 404: Problem})
def remove_member(request, collection_id: int, user_id: int):
    """Stop sharing the collection with a user (its owner only); their next search no longer sees it."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("remove members")})
    try:
        sharing.member_remove(collection=collection, user_id=user_id, actor=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(204, None)


@invitations_router.get("", response=list[InvitationOut])
def my_invitations(request):
    """The invitations waiting for the caller's answer: each collection's name and owner, none of its documents."""
    return [
        _invitation(i, owner=i.collection.owner, invitee=request.user)
        for i in sharing.invitations_for_user(user=request.user)
    ]


@invitations_router.post("/{invitation_id}/accept", response={200: CollectionOut, 404: Problem})
def accept_invitation(request, invitation_id: int):
    """Accept an invitation of the caller's: they become a member, and their next search reads the collection.
    404 for anyone else's invitation, or one already answered or withdrawn."""
    try:
        collection = sharing.invitation_accept(invitation_id=invitation_id, user=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(
        200, _out(get_object_or_404(sharing.collections_for_user(user=request.user), pk=collection.pk), request.user)
    )


@invitations_router.post("/{invitation_id}/decline", response={204: None, 404: Problem})
def decline_invitation(request, invitation_id: int):
    """Decline an invitation of the caller's; 404 for anyone else's, or one already answered or withdrawn."""
    try:
        sharing.invitation_decline(invitation_id=invitation_id, user=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(204, None)
