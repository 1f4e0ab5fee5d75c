"""GET /api/v1/search: ranked passages, only from readable collections, with a bearer token."""

import pytest

from core.models import ApiToken
from documents.models import Collection
from tests.documents_factory import add_text_document as add

pytestmark = pytest.mark.django_db




@pytest.fixture
def library(user, other_user, collection):
    theirs = Collection.objects.create(name="Mallory", owner=other_user)
    return {
        "volcano": add(user, collection, "volcano", "Shield volcanoes erupt basaltic lava in gentle flows."),
        "glacier": add(user, Collection.objects.create(name="Ice", owner=user), "glacier",
                       "Glaciers carve valleys and deposit moraines of rock."),
        "secret": add(other_user, theirs, "secret", "Mallory's secret plan about volcanoes and lava."),
    }


def get(client, user, url):
    raw = ApiToken.issue(user=user)[1]
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_search_returns_ranked_passages_with_their_source(client, user, library, mode):
    response = get(client, user, f"/api/v1/search?q=basaltic+lava+volcanoes&k=2&mode={mode}")
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["document_id"] == library["volcano"].pk
    assert results[0]["document_title"] == "volcano" and "basaltic" in results[0]["text"]
    assert set(results[0]) >= {"chunk_id", "document_id", "document_title", "page", "score", "text"}
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_search_never_returns_other_users_passages(client, user, other_user, library):
    mine = {r["document_id"] for r in get(client, user, "/api/v1/search?q=volcanoes+lava&k=10").json()["results"]}
    assert library["secret"].pk not in mine
    theirs = get(client, other_user, "/api/v1/search?q=volcanoes+lava&k=10").json()["results"]
    assert {r["document_id"] for r in theirs} == {library["secret"].pk}


def test_collection_narrows_the_search_by_name_or_id(client, user, library):
    ice = Collection.objects.get(name="Ice")
    for value in ("Ice", str(ice.pk)):
        results = get(client, user, f"/api/v1/search?q=lava+glaciers&collection={value}").json()["results"]
        assert {r["document_id"] for r in results} == {library["glacier"].pk}


def test_another_users_collection_is_404(client, user, library):
    theirs = Collection.objects.get(name="Mallory")
    assert get(client, user, f"/api/v1/search?q=lava&collection={theirs.pk}").status_code == 404
    assert get(client, user, "/api/v1/search?q=lava&collection=Mallory").status_code == 404


def test_a_name_several_readable_collections_share_means_the_first_of_them(client, user, other_user, library):
    shared = Collection.objects.create(name="Rocks", owner=other_user)
    shared.members.add(user)
    mine = Collection.objects.create(name="Rocks", owner=user)
    add(other_user, shared, "basalt", "Basalt is a dark volcanic rock.")
    add(user, mine, "granite", "Granite is a light plutonic rock.")
    Collection.objects.create(name="Ice", owner=other_user)  # not readable: never chosen
    for value, expected in (("Rocks", {"basalt"}), ("Ice", {"glacier"})):
        results = get(client, user, f"/api/v1/search?q=rock+glaciers&collection={value}&k=10").json()["results"]
        assert {r["document_title"] for r in results} == expected


def test_an_unknown_collection_is_404_whatever_the_query(client, user, library):
    for query in ("lava", "+", "%00"):
        assert get(client, user, f"/api/v1/search?q={query}&collection=Nowhere").status_code == 404
        assert get(client, user, f"/api/v1/search?q={query}&collection=Ice").status_code == 200
    assert get(client, user, f"/api/v1/search?q=lava&collection={10**30}").status_code == 404
    assert get(client, user, "/api/v1/search?q=lava&collection=Ice%00").status_code == 404


def test_bad_parameters_are_422_and_no_token_is_401(client, user, library):
    assert get(client, user, "/api/v1/search?q=lava&k=0").status_code == 422
    assert get(client, user, "/api/v1/search?q=lava&mode=psychic").status_code == 422
    assert get(client, user, "/api/v1/search").status_code == 422
    assert client.get("/api/v1/search?q=lava").status_code == 401
    assert client.get("/api/v1/search?q=lava", HTTP_AUTHORIZATION="Bearer rag_wrong").status_code == 401


def test_hostile_queries_do_not_fail(client, user, library):
    for query in ["%27%3B+DROP+TABLE+documents_chunk%3B--", "%F0%9F%94%A5" * 50, "x" * 5000, "%26%7C%21%28%29"]:
        assert get(client, user, f"/api/v1/search?q={query}").status_code == 200


def test_search_is_in_the_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/search" in schema["paths"]
