"""The admin of embedding spaces: spaces with their vectors, collections still on an old space with "migrate",
evaluate, the switch's confirmation (the gate's reason, force), rollback, retire, the migrations' figures."""

from __future__ import annotations

import pytest
from django.urls import reverse

from documents.models import Collection, EmbeddingSpace, SpaceMigration
from tests.documents.spaces.migrating import add_documents, fill, migrating, space

pytestmark = pytest.mark.django_db

COLLECTIONS = "/admin/documents/embeddingspace/collections/"


@pytest.fixture
def old_collection(user):
    """A collection still on a space that is not the default (the configuration changed since)."""
    old = space("old-64", 64)
    collection = Collection.objects.create(owner=user, name="Archive")
    Collection.objects.filter(pk=collection.pk).update(active_space=old)
    collection.refresh_from_db()
    add_documents(user, collection, count=12)
    fill(collection, old)
    EmbeddingSpace.objects.filter(pk=old.pk).update(status=EmbeddingSpace.Status.ACTIVE)
    return collection


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_spaces_list_shows_vectors_and_the_collections_on_an_old_space(admin_client, collection, old_collection):
    page = admin_client.get(reverse("admin:documents_embeddingspace_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "1 collection still searches a space other than the default" in html
    assert f'href="{COLLECTIONS}?old=1"' in html
    rows = {space.name: space for space in page.context["cl"].result_list}
    assert rows["old-64"].n_vectors == 12 and rows["old-64"].n_bytes > 0 and rows["old-64"].n_collections == 1
    assert rows["hashing-384"].n_collections == 1 and not rows["hashing-384"].n_vectors
    # Each space's collections, one click away.
    assert f'href="{COLLECTIONS}?space={rows["old-64"].pk}"' in html
    per_space = admin_client.get(f"{COLLECTIONS}?space={rows['old-64'].pk}")
    assert [row["collection"].name for row in per_space.context["rows"]] == ["Archive"]


def test_the_old_collections_page_offers_migrate_to_the_default_and_it_starts(admin_client, collection, old_collection):
    page = admin_client.get(COLLECTIONS + "?old=1")
    assert [row["collection"].name for row in page.context["rows"]] == ["Archive"]
    html = page.content.decode()
    assert "(not the default)" in html and 'value="Migrate"' in html
    assert '<option value="hashing-384" selected>' in html
    assert [row["collection"].name for row in admin_client.get(COLLECTIONS).context["rows"]] == ["Archive", "Handbook"]
    done = admin_client.post(f"{COLLECTIONS}{old_collection.pk}/migrate/", {"to": "hashing-384"}, follow=True)
    assert "Migrating Archive to hashing-384" in messages_of(done)[0]
    migration = SpaceMigration.objects.get()
    assert (migration.collection, migration.target.name, migration.state) == (
        old_collection,
        "hashing-384",
        "backfilling",
    )
    row = done.context["rows"][0]
    assert row["open"] and row["state"]["target"] == "hashing-384"
    again = admin_client.post(f"{COLLECTIONS}{old_collection.pk}/migrate/", {"to": "hashing-384"}, follow=True)
    assert "already migrating" in messages_of(again)[0]


def test_evaluate_then_the_switch_page_shows_the_gate_and_force_switches(admin_client, user, collection):
    # Noise finds a query's chunk in its top 10 by chance: with 60 chunks, 1 time in 6, never the gate's 0.9.
    add_documents(user, collection, count=60)
    migrating(collection, space("noise-256", 256), noise=True)
    switch_url = f"{COLLECTIONS}{collection.pk}/switch/"
    before = admin_client.get(switch_url)
    assert "has not been evaluated" in before.content.decode() and 'name="force"' in before.content.decode()
    evaluated = admin_client.post(f"{COLLECTIONS}{collection.pk}/evaluate/", follow=True)
    assert messages_of(evaluated)[0].startswith("Evaluated Handbook: recall@10 ")
    assert "not evaluated" not in evaluated.context["rows"][0]["evaluation"]
    page = admin_client.get(switch_url)
    assert page.context["reason"] and "recall@10" in page.context["reason"]
    refused = admin_client.post(switch_url, {}, follow=True)
    assert "recall@10" in messages_of(refused)[0]
    collection.refresh_from_db()
    assert collection.active_space.name == "hashing-384"
    forced = admin_client.post(switch_url, {"force": "on"}, follow=True)
    assert messages_of(forced) == ["Handbook now searches noise-256."]
    assert SpaceMigration.objects.get().forced is True
    rolled = admin_client.post(f"{COLLECTIONS}{collection.pk}/rollback/", follow=True)
    assert messages_of(rolled) == ["Handbook searches hashing-384 again."]


def test_a_passing_gate_needs_no_force(admin_client, user, collection):
    add_documents(user, collection, count=15)
    migrating(collection, space("hashing-256", 256))
    admin_client.post(f"{COLLECTIONS}{collection.pk}/evaluate/")
    page = admin_client.get(f"{COLLECTIONS}{collection.pk}/switch/")
    assert page.context["reason"] is None and 'id="gate-passes"' in page.content.decode()
    assert 'name="force"' not in page.content.decode()
    assert messages_of(admin_client.post(f"{COLLECTIONS}{collection.pk}/switch/", follow=True)) == [
        "Handbook now searches hashing-256."
    ]


def test_the_migrations_list_shows_evaluation_and_drift(admin_client, user, collection):
    add_documents(user, collection, count=15)
    migrating(collection, space("hashing-384-again", 384, model="hashing-384"))
    admin_client.post(f"{COLLECTIONS}{collection.pk}/evaluate/")
    html = admin_client.get(reverse("admin:documents_spacemigration_changelist")).content.decode()
    assert "recall@10 1.000" in html
    assert "same model: cosine(old, new) p1 1.000, p50 1.000" in html


def test_add_goes_through_space_add_and_refuses_a_taken_name(admin_client, collection):
    url = reverse("admin:documents_embeddingspace_add")
    added = admin_client.post(url, {"name": "small", "backend": "hashing", "dimensions": "32"})
    assert added.status_code == 302
    small = EmbeddingSpace.objects.get(name="small")
    assert (small.model, small.dimensions, small.status) == ("hashing-32", 32, "building")
    taken = admin_client.post(url, {"name": "small", "backend": "hashing", "dimensions": "32"})
    assert taken.status_code == 200 and "already exists" in taken.content.decode()


def test_non_staff_are_kept_out(client, user, collection):
    client.force_login(user)
    assert client.get(COLLECTIONS).status_code == 302  # to the admin's login
    assert client.post(f"{COLLECTIONS}{collection.pk}/migrate/", {"to": "x"}).status_code == 302
    assert not SpaceMigration.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_retire_action(admin_client, collection):
    unused = space("unused-64", 64)
    url = reverse("admin:documents_embeddingspace_changelist")
    selected = [unused.pk, collection.active_space.pk]
    done = admin_client.post(url, {"action": "retire_spaces", "_selected_action": selected}, follow=True)
    shown = messages_of(done)
    assert "Retired unused-64: its vectors and indexes are dropped." in shown
    assert any("in use" in message for message in shown)
    unused.refresh_from_db()
    assert unused.status == "retired"


@pytest.mark.django_db(transaction=True)
def test_staff_who_may_only_view_spaces_cannot_retire_one(client, django_user_model):
    """Django offers an action to anyone who may open the list, which viewing allows: retiring asks for "change"."""
    from django.contrib.auth.models import Permission

    unused = space("unused-64", 64)
    viewer = django_user_model.objects.create_user("viewer", "viewer@example.com", "x", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_embeddingspace"))
    client.force_login(viewer)
    url = reverse("admin:documents_embeddingspace_changelist")
    listed = client.get(url)
    assert listed.status_code == 200 and "retire_spaces" not in listed.content.decode()
    client.post(url, {"action": "retire_spaces", "_selected_action": [unused.pk], "index": 0})
    unused.refresh_from_db()
    assert unused.status != "retired"
