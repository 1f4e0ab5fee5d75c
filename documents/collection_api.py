"""/api/v1/collections: the caller's collections, creating one, and (for its owner) who may read one."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from core import ratelimit
from documents import sharing
from documents.models import Collection
from documents.selectors import collection_for_user

router = Router(tags=["collections"])


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
    response={201: MemberOut, 403: Problem, 400: Problem, 404: Problem, 409: Problem, 429: Problem},
)
def add_member(request, collection_id: int, body: MemberIn):
    """Share the collection with a user, by username or e-mail (its owner only)."""
    collection, is_owner = collection_for_user(request.user, collection_id)
    if not is_owner:
        return Status(403, {"detail": sharing.owners_only("add members")})
    allowed, retry_after = ratelimit.hit("share", request.user)
    if not allowed:
        return ratelimit.refused(request, "share", retry_after)
    try:
        member = sharing.member_add(collection=collection, identifier=body.member, actor=request.user)
    except sharing.SharingRefused as refused:
        return Status(refused.status_code, {"detail": str(refused)})
    return Status(201, _member(member))


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
