"""Sharing a collection: create one, add and remove its members, and what the collections pages read.

Who may read a collection is decided in one place (``Collection.objects.visible_to`` and its SQL twin in
documents.search.sql): its owner and its members. This module only changes the membership, so a member
removed here is refused by the very next search or question. Ownership (who may change the membership) is
the flag ``documents.selectors.collection_for_user`` returns; views and the API check it before calling.
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
from documents.models import Collection, Document

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


class OwnerCannotBeRemoved(SharingRefused):
    pass


class NotAMember(SharingRefused):
    status_code = 404


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


def member_add(*, collection: Collection, identifier: str, actor: Any) -> Any:
    """Share ``collection`` with the user named by ``identifier`` (username or e-mail); that user."""
    member = find_user(identifier)
    if member.pk == collection.owner_id:
        raise AlreadyMember(f"{member.get_username()} owns this collection.")
    with transaction.atomic():
        # The collection's row locked: two tabs adding the same person at once make one membership, one event.
        Collection.objects.select_for_update().filter(pk=collection.pk).values_list("pk").first()
        if collection.members.filter(pk=member.pk).exists():
            raise AlreadyMember(f"{member.get_username()} is already a member.")
        collection.members.add(member)
    audit.record(action="member_added", actor=actor, target=collection, member=member.get_username())
    return member


def member_remove(*, collection: Collection, user_id: int, actor: Any) -> Any:
    """Stop sharing ``collection`` with user ``user_id``: their next search or question no longer sees it."""
    if user_id == collection.owner_id:
        raise OwnerCannotBeRemoved("The owner cannot be removed from their own collection.")
    with transaction.atomic():
        Collection.objects.select_for_update().filter(pk=collection.pk).values_list("pk").first()
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
    their e-mail addresses are not the owner's to learn (anyone can be added by username)."""
    return collection.members.order_by("username").only("id", "username")
