"""Sharing a collection: create one, invite people and remove its members, and what the collections pages read.

Who may read a collection is decided in one place (``Collection.objects.visible_to`` and its SQL twin in
documents.search.sql): its owner and its members. This module only changes the membership, so a member
removed here is refused by the very next search or question. Ownership (who may change the membership) is
the flag ``documents.selectors.collection_for_user`` returns; views and the API check it before calling.

Nobody becomes a member without their consent: an owner invites (``member_invite``) and only the invitee's
``invitation_accept`` adds them. A member's searches and questions read every collection they belong to, so a
collection "shared" with someone at once would let any user put passages (false facts, instructions to the
model) into another's answers. Staff keep direct membership editing in the Django admin.

Locks, in one order everywhere: the collection's row, then an invitation's (two tabs or an owner withdrawing
while the invitee accepts make one outcome, never a deadlock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from audit import services as audit
from core.text import without_surrogates
from documents.models import Collection, Document, Invitation

NAME_MAX_LENGTH = 200


class SharingRefused(Exception):
    """A change to a collection or its members that cannot be made; ``str(error)`` is for the person asking."""

    status_code = 400


class InvalidName(SharingRefused):
    pass


class NameTaken(SharingRefused):
    status_code = 409


class NoSuchUser(SharingRefused):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No user with that username or e-mail.")


class AmbiguousEmail(SharingRefused):
    def __init__(self) -> None:
        super().__init__("Several people have that e-mail address: add them by their username instead.")


class AlreadyMember(SharingRefused):
    status_code = 409


class AlreadyInvited(SharingRefused):
    status_code = 409


class OwnerCannotBeRemoved(SharingRefused):
    pass


class NotAMember(SharingRefused):
    status_code = 404


class NoSuchInvitation(SharingRefused):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No such invitation: it may have been withdrawn, accepted or declined already.")


def owners_only(action: str) -> str:
    """Why a member cannot ``action``: one wording for pages and the API."""
    return f"Only the collection's owner can {action}."


# --- writes -------------------------------------------------------------------------------------------------


def clean_collection_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidName("Give the collection a name.")
    if without_surrogates(name) != name:  # a lone surrogate ("\ud800" in JSON) is no text PostgreSQL can store
        raise InvalidName("A collection's name must be valid text (UTF-8).")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidName(f"A collection's name can have at most {NAME_MAX_LENGTH} characters.")
    if re.search(r"[\x00-\x1f\x7f]", name):  # PostgreSQL text cannot hold NUL; no name needs the others
        raise InvalidName("A collection's name cannot contain control characters.")
    return name


def collection_create(*, owner: Any, name: str, description: str = "") -> Collection:
    """A new collection owned by ``owner``; NameTaken if they already have one of that name."""
    name = clean_collection_name(name)
    description = without_surrogates((description or "").replace("\x00", "")).strip()[:2000]
    try:
        with transaction.atomic():
            collection = Collection.objects.create(owner=owner, name=name, description=description)
    except IntegrityError as error:  # unique_collection_name_per_owner, also when two requests race
        raise NameTaken(f"You already have a collection named “{name}”.") from error
    audit.record(action="collection_created", actor=owner, target=collection)
    return collection


def find_user(identifier: str) -> Any:
    """The active user whose username is ``identifier``, or else whose e-mail it is (any case); NoSuchUser."""
    identifier = without_surrogates((identifier or "").replace("\x00", "")).strip()
    if not identifier or len(identifier) > 254:
        raise NoSuchUser()
    users = get_user_model().objects.filter(is_active=True)
    by_name = users.filter(username=identifier).first()
    if by_name is not None:
        return by_name
    if "@" in identifier:
        by_email = list(users.filter(email__iexact=identifier)[:2])
        if len(by_email) > 1:
            raise AmbiguousEmail()
        if by_email:
            return by_email[0]
    raise NoSuchUser()


def _lock(collection_id: int) -> None:
    """The collection's row locked until the transaction ends: changes to its members and invitations queue."""
    Collection.objects.select_for_update().filter(pk=collection_id).values_list("pk").first()


def member_invite(*, collection: Collection, identifier: str, actor: Any) -> Invitation:
    """Invite the user named by ``identifier`` (username or e-mail) to read ``collection``: they read nothing of it
    until they accept. AlreadyMember for its owner or a member, AlreadyInvited if they are invited already."""
    invitee = find_user(identifier)
    name = invitee.get_username()
    if invitee.pk == collection.owner_id:
        raise AlreadyMember(f"{name} owns this collection.")
    with transaction.atomic():
        _lock(collection.pk)  # two tabs inviting the same person at once: one invitation, one event
        if collection.members.filter(pk=invitee.pk).exists():
            raise AlreadyMember(f"{name} is already a member.")
        if Invitation.objects.filter(collection=collection, invitee=invitee).exists():
            raise AlreadyInvited(f"{name} is already invited: they see the collection once they accept.")
        invitation = Invitation.objects.create(collection=collection, invitee=invitee, invited_by=actor)
    audit.record(action="member_invited", actor=actor, target=collection, member=name)
    return invitation


def _pending(*, invitation_id: int, **scope: Any) -> Invitation:
    """Invitation ``invitation_id`` within ``scope`` (its invitee, or its collection), locked after its collection's
    row (the one lock order); NoSuchInvitation otherwise. Inside a transaction."""
    collection_id = Invitation.objects.filter(pk=invitation_id, **scope).values_list("collection_id", flat=True).first()
    if collection_id is None:
        raise NoSuchInvitation()
    _lock(collection_id)
    invitation = (
        Invitation.objects.select_for_update(of=("self",))
        .select_related("collection", "invitee")
        .filter(pk=invitation_id, **scope)
        .first()
    )
    if invitation is None:  # withdrawn, accepted or declined while we waited for the lock
        raise NoSuchInvitation()
    return invitation


def invitation_accept(*, invitation_id: int, user: Any) -> Collection:
    """``user`` accepts their invitation ``invitation_id``: they become a member of its collection, which their next
    search and question read. NoSuchInvitation unless the invitation is theirs and still pending."""
    with transaction.atomic():
        invitation = _pending(invitation_id=invitation_id, invitee=user)
        collection = invitation.collection
        invitation.delete()
        collection.members.add(user)
    audit.record(action="member_joined", actor=user, target=collection, member=user.get_username())
    return collection


def invitation_decline(*, invitation_id: int, user: Any) -> Collection:
    """``user`` declines their invitation ``invitation_id``; the collection it was for. NoSuchInvitation unless the
    invitation is theirs and still pending."""
    with transaction.atomic():
        invitation = _pending(invitation_id=invitation_id, invitee=user)
        invitation.delete()
    audit.record(action="invitation_declined", actor=user, target=invitation.collection, member=user.get_username())
    return invitation.collection


def invitation_withdraw(*, collection: Collection, invitation_id: int, actor: Any) -> Any:
    """The owner withdraws invitation ``invitation_id`` to ``collection``; the person it was for."""
    with transaction.atomic():
        invitation = _pending(invitation_id=invitation_id, collection=collection)
        invitation.delete()
    invitee = invitation.invitee
    audit.record(action="invitation_withdrawn", actor=actor, target=collection, member=invitee.get_username())
    return invitee


def forget_invitations_of_the_deactivated(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A user's ``post_save``: a deactivated account's pending invitations go, as a deleted one's do (CASCADE)."""
    if not instance.is_active:
        Invitation.objects.filter(invitee_id=instance.pk).delete()


def member_remove(*, collection: Collection, user_id: int, actor: Any) -> Any:
    """Stop sharing ``collection`` with user ``user_id``: their next search or question no longer sees it."""
    if user_id == collection.owner_id:
        raise OwnerCannotBeRemoved("The owner cannot be removed from their own collection.")
    with transaction.atomic():
        _lock(collection.pk)
        member = collection.members.filter(pk=user_id).first()
        if member is None:
            raise NotAMember("That person is not a member of this collection.")
        collection.members.remove(member)
    audit.record(action="member_removed", actor=actor, target=collection, member=member.get_username())
    return member


# --- reads --------------------------------------------------------------------------------------------------


def _count_of(queryset: QuerySet[Any], column: str) -> Coalesce:
    counts = queryset.filter(**{column: OuterRef("pk")}).order_by().values(column).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


def collections_for_user(*, user: Any) -> QuerySet[Collection]:
    """The collections ``user`` may read, with their owner and how many members and documents each has.

    One query whatever their number: the counts are subqueries (two joins would multiply members by documents).
    """
    readable = Collection.objects.visible_to(user).values("pk")
    return (
        Collection.objects.filter(pk__in=readable)
        .select_related("owner")
        .annotate(
            member_count=_count_of(Collection.members.through.objects.all(), "collection_id"),
            document_count=_count_of(Document.objects.all(), "collection_id"),
        )
        .order_by("name", "pk")
    )


@dataclass(frozen=True)
class CollectionsPage:
    owned: list[Collection]
    shared: list[Collection]


def collections_page(*, user: Any) -> CollectionsPage:
    """``collections_for_user`` split into those ``user`` owns and those shared with them."""
    collections = list(collections_for_user(user=user))
    return CollectionsPage(
        owned=[c for c in collections if c.owner_id == user.pk],
        shared=[c for c in collections if c.owner_id != user.pk],
    )


def members_of(collection: Collection) -> QuerySet[Any]:
    """The people ``collection`` is shared with (its owner is not among them), by username. Their usernames only:
    their e-mail addresses are not the owner's to learn (anyone can be invited by username)."""
    return collection.members.order_by("username").only("id", "username")


def invitations_for_user(*, user: Any) -> QuerySet[Invitation]:
    """The invitations waiting for ``user``'s answer, oldest first, with their collection and its owner (one query).
    An invitee sees the collection's name and owner, not its documents, before they accept."""
    return (
        Invitation.objects.filter(invitee=user)
        .select_related("collection__owner")
        .only("id", "created_at", "collection__id", "collection__name", "collection__owner__id",
              "collection__owner__username")
        .order_by("created_at", "id")
    )


def invitations_of(collection: Collection) -> QuerySet[Invitation]:
    """``collection``'s invitations not yet answered, for its owner: who, by username only (as ``members_of``)."""
    return (
        collection.invitations.select_related("invitee")
        .only("id", "created_at", "collection_id", "invitee__id", "invitee__username")
        .order_by("invitee__username", "id")
    )
