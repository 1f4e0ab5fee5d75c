"""/api/v1/embedding-spaces and /api/v1/collections/{id}/embedding-space/...: staff with the admin's permission on
embedding spaces only, refusals are 409."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from core.models import ApiToken
from documents.models import EmbeddingSpace, SpaceMigration
from documents.spaces import storage
from tests.documents.spaces.migrating import add_documents, fill, migrating, space

pytestmark = pytest.mark.django_db


def staff_with(django_user_model, username: str, *codenames: str):
    member = django_user_model.objects.create_user(username, f"{username}@example.com", "x", is_staff=True)
    member.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return member


@pytest.fixture
def staff(django_user_model):
    return staff_with(django_user_model, "operator", "change_embeddingspace")


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user=user)[1]}"}


def post(client, url, body, user):
    return client.post(url, body, content_type="application/json", **bearer(user))


def test_only_staff_may_use_any_endpoint(client, user, collection):
    base = f"/api/v1/collections/{collection.pk}/embedding-space"
    refused = [
        client.get("/api/v1/embedding-spaces", **bearer(user)),
        post(client, "/api/v1/embedding-spaces", {"name": "x", "backend": "hashing"}, user),
        post(client, "/api/v1/embedding-spaces/hashing-384/retire", {}, user),
        client.get(base, **bearer(user)),  # even the collection's owner
        post(client, f"{base}/migrate", {"to": "hashing-384"}, user),
        post(client, f"{base}/evaluate", {}, user),
        post(client, f"{base}/switch", {"force": True}, user),
        post(client, f"{base}/rollback", {}, user),
    ]
    assert [response.status_code for response in refused] == [403] * 8
    assert refused[0].json() == {"detail": "Only staff may manage embedding spaces."}
    assert client.get("/api/v1/embedding-spaces").status_code == 401
    assert not EmbeddingSpace.objects.filter(name="x").exists()


def test_staff_need_the_admins_permission_on_spaces(client, django_user_model, collection):
    """As the admin's pages: a staff member without the permission is refused everything, one who may only view
    spaces sees them and changes nothing (not even someone else's collection: the issue a review found)."""
    base = f"/api/v1/collections/{collection.pk}/embedding-space"
    changes = [
        ("/api/v1/embedding-spaces", {"name": "x", "backend": "hashing", "dimensions": 64}),
        ("/api/v1/embedding-spaces/hashing-384/retire", {}),
        (f"{base}/migrate", {"to": "hashing-384"}),
        (f"{base}/evaluate", {}),
        (f"{base}/switch", {"force": True}),
        (f"{base}/rollback", {}),
    ]
    helpdesk = staff_with(django_user_model, "helpdesk")
    refused = [client.get("/api/v1/embedding-spaces", **bearer(helpdesk)), client.get(base, **bearer(helpdesk))]
    refused += [post(client, url, body, helpdesk) for url, body in changes]
    assert [response.status_code for response in refused] == [403] * 8
    assert "Can view embedding space" in refused[0].json()["detail"]
    assert "Can change embedding space" in refused[2].json()["detail"]

    viewer = staff_with(django_user_model, "viewer", "view_embeddingspace")
    assert client.get("/api/v1/embedding-spaces", **bearer(viewer)).status_code == 200
    assert client.get(base, **bearer(viewer)).status_code == 200
    assert [post(client, url, body, viewer).status_code for url, body in changes] == [403] * 6
    assert not EmbeddingSpace.objects.filter(name="x").exists()
    assert not collection.space_migrations.exists()


def test_list_and_add_spaces(client, staff, collection):
    added = post(client, "/api/v1/embedding-spaces", {"name": "small", "backend": "hashing", "dimensions": 64}, staff)
    assert added.status_code == 201
    assert {key: added.json()[key] for key in ("name", "backend", "dimensions", "status", "rows", "default")} == {
        "name": "small",
        "backend": "hashing",
        "dimensions": 64,
        "status": "building",
        "rows": 0,
        "default": False,
    }
    listed = client.get("/api/v1/embedding-spaces", **bearer(staff)).json()
    assert [(s["name"], s["default"], s["collections"]) for s in listed] == [
        ("hashing-384", True, 1),
        ("small", False, 0),
    ]
    again = post(client, "/api/v1/embedding-spaces", {"name": "small", "backend": "hashing"}, staff)
    assert again.status_code == 400 and "already exists" in again.json()["detail"]


def test_migrate_evaluate_switch_and_rollback(client, staff, user, collection):
    add_documents(user, collection, count=20)
    fill(collection, collection.active_space)
    base = f"/api/v1/collections/{collection.pk}/embedding-space"
    none = post(client, f"{base}/evaluate", {}, staff)
    assert none.status_code == 409 and "no migration in progress" in none.json()["detail"]
    state = client.get(base, **bearer(staff)).json()
    assert (state["active"], state["target"], state["coverage"], state["evaluation"]) == ("hashing-384", None, 1.0, {})

    space("hashing-256", 256, index=False)
    started = post(client, f"{base}/migrate", {"to": "hashing-256"}, staff)
    assert started.status_code == 202
    assert (started.json()["target"], started.json()["state"], started.json()["total"]) == (
        "hashing-256",
        "backfilling",
        20,
    )
    busy = post(client, f"{base}/migrate", {"to": "hashing-256"}, staff)
    assert busy.status_code == 409 and "already migrating" in busy.json()["detail"]
    assert post(client, f"{base}/migrate", {"to": "nope"}, staff).status_code == 404
    SpaceMigration.objects.all().delete()  # the backfill of this test: done by hand below
    migrating(collection, EmbeddingSpace.objects.get(name="hashing-256"))
    storage.create_index(EmbeddingSpace.objects.get(name="hashing-256"), "cosine")

    refused = post(client, f"{base}/switch", {}, staff)
    assert refused.status_code == 409 and "has not been evaluated" in refused.json()["detail"]
    evaluated = post(client, f"{base}/evaluate", {"sample": 10}, staff)
    assert evaluated.status_code == 200 and evaluated.json()["recall_at_10"] >= 0.9
    assert client.get(base, **bearer(staff)).json()["evaluation"] == evaluated.json()
    switched = post(client, f"{base}/switch", {}, staff)
    assert switched.status_code == 200
    assert (switched.json()["active"], switched.json()["previous"], switched.json()["state"]) == (
        "hashing-256",
        "hashing-384",
        "switched",
    )
    assert switched.json()["drift"]["kind"] == "new_model"
    rolled = post(client, f"{base}/rollback", {}, staff)
    assert rolled.status_code == 200 and rolled.json()["active"] == "hashing-384"


def test_a_gate_refusal_is_409_with_the_reason_and_force_overrides_it(client, staff, user, collection):
    # Noise finds a query's chunk in its top 10 by chance: 10 of 60 chunks, so 20 queries never reach the gate's
    # 0.9 (with 20 chunks and 10 queries, half of them found each time, it did about once in a hundred runs).
    add_documents(user, collection, count=60)
    migrating(collection, space("noise-256", 256), noise=True)
    base = f"/api/v1/collections/{collection.pk}/embedding-space"
    assert post(client, f"{base}/evaluate", {"sample": 20}, staff).status_code == 200
    refused = post(client, f"{base}/switch", {"force": False}, staff)
    assert refused.status_code == 409 and "recall@10" in refused.json()["detail"]
    forced = post(client, f"{base}/switch", {"force": True}, staff)
    assert forced.status_code == 200 and forced.json()["forced"] is True


def test_labelled_evaluation_and_bad_bodies(client, staff, user, collection):
    documents = add_documents(user, collection, count=10)
    migrating(collection, space("hashing-256", 256))
    base = f"/api/v1/collections/{collection.pk}/embedding-space"
    for number, document in enumerate(documents):
        document.external_id = f"d{number}"
        document.save(update_fields=["external_id"])
    queries = {f"q{n}": d.chunks.get().text[:80] for n, d in enumerate(documents)}
    qrels = {f"q{n}": [f"d{n}"] for n in range(len(documents))}
    labelled = post(client, f"{base}/evaluate", {"queries": queries, "qrels": qrels, "sample": 5}, staff)
    assert labelled.status_code == 200 and labelled.json()["labelled"] is True
    assert labelled.json()["ndcg_at_10_target"] >= 0.9
    assert post(client, f"{base}/evaluate", {"queries": queries}, staff).status_code == 400
    assert post(client, f"{base}/evaluate", {"sample": 0}, staff).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_retire_drops_an_unused_space_and_refuses_one_in_use(client, staff, collection):
    refused = post(client, "/api/v1/embedding-spaces/hashing-384/retire", {}, staff)
    assert refused.status_code == 409 and "in use" in refused.json()["detail"]
    assert post(client, "/api/v1/embedding-spaces/nope/retire", {}, staff).status_code == 404
    space("unused-64", 64)
    retired = post(client, "/api/v1/embedding-spaces/unused-64/retire", {}, staff)
    assert retired.status_code == 200 and retired.json()["status"] == "retired" and retired.json()["bytes"] == 0
