"""A property: the readable-collections SQL that every search statement uses (documents.search.sql) and
``Collection.objects.visible_to``, which pages and lists use, name the same collections for every user.

Random users (staff, superusers and inactive ones among them: neither rule gives them more), collections
with random owners and members, and names shared between owners. Each example rolls back.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.http import parse_id
from documents.models import Collection
from documents.search import Filters
from documents.search.filters import covered_collections
from documents.search.sql import COLLECTION, readable_collections

pytestmark = pytest.mark.django_db

NAMES = ["HR", "Legal", "Handbook", "1", "2"]  # ids as names too: a reference may be either

world = st.fixed_dictionaries({
    # (is_staff, is_superuser, is_active) per user
    "users": st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=5),
    # (owner index, member indexes, name) per collection
    "collections": st.lists(
        st.tuples(st.integers(0, 4), st.sets(st.integers(0, 4), max_size=4), st.sampled_from(NAMES)),
        max_size=8,
    ),
    "reference": st.sampled_from(NAMES + ["nope"]),
})


def build(spec) -> list:
    users = [
        get_user_model().objects.create_user(f"u{i}", is_staff=staff, is_superuser=superuser, is_active=active)
        for i, (staff, superuser, active) in enumerate(spec["users"])
    ]
    for owner, members, name in spec["collections"]:
        owner = users[owner % len(users)]
        taken = set(Collection.objects.filter(owner=owner).values_list("name", flat=True))
        while name in taken:  # a name is unique per owner
            name += "'"
        collection = Collection.objects.create(name=name, owner=owner)
        collection.members.set(users[m % len(users)] for m in members)
    return users


def ids(sql: str, params: list) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=world)
def test_the_readable_collections_sql_and_visible_to_agree(spec):
    with transaction.atomic():
        users = build(spec)
        for user in [*users, AnonymousUser()]:
            orm = set(Collection.objects.visible_to(user).values_list("pk", flat=True))
            readable, params = readable_collections(user.pk)
            assert ids(readable, params) == orm
            # As a search's first statement uses it: every readable collection, or the one a reference names.
            covered, params = covered_collections(user, Filters(), "g")
            assert ids(f"SELECT g.id FROM {COLLECTION} g WHERE {covered}", params) == orm
            reference = spec["reference"]
            named = {pk for pk, name in Collection.objects.filter(pk__in=orm).values_list("pk", "name")
                     if name == reference or pk == parse_id(reference)}
            covered, params = covered_collections(user, Filters(collection=reference), "g")
            assert ids(f"SELECT g.id FROM {COLLECTION} g WHERE {covered}", params) == ({min(named)} if named else set())
        transaction.set_rollback(True)  # the next example starts from an empty database
