"""The personal "API tokens" page and the token services behind it (and behind the admin)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from core import services
from core.models import ApiToken

pytestmark = pytest.mark.django_db


def secret_in(response) -> str:
    found = re.search(rb'value="(rag_[A-Za-z0-9_-]+)" id="raw-token"', response.content)
    assert found, "the new token is not on the page"
    return found.group(1).decode()


def test_any_signed_in_user_creates_a_token_whose_secret_is_in_the_response_only(client, user):
    assert not user.is_staff
    client.force_login(user)
    response = client.post("/accounts/tokens/", {"name": "laptop scripts"})
    assert response.status_code == 201
    raw = secret_in(response)
    token = ApiToken.objects.get(user=user)
    assert token.name == "laptop scripts" and token.key_hash != raw and raw not in token.key_hash
    assert "Cache-Control" in response and "no-store" in response["Cache-Control"]
    assert raw not in str(response.cookies) and raw not in str(dict(client.session))
    listing = client.get("/accounts/tokens/")
    assert b"laptop scripts" in listing.content and raw.encode() not in listing.content
    # The secret works against the API.
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_the_list_shows_name_prefix_created_and_last_used(client, user):
    token, raw = services.token_create(user=user, name="ci")
    client.force_login(user)
    assert b"never" in client.get("/accounts/tokens/").content
    client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    page = client.get("/accounts/tokens/").content.decode()
    assert "ci" in page and f"{token.prefix}…" in page and "never" not in page and " ago" in page


def test_a_token_needs_a_name_without_control_characters(client, user):
    client.force_login(user)
    for name, message in (
        ("", "Give the token a name"),
        ("   ", "Give the token a name"),
        ("a\x01b", "control characters"),
        ("x" * 101, "at most 100 characters"),
    ):
        response = client.post("/accounts/tokens/", {"name": name})
        assert response.status_code == 400, name
        assert message in response.content.decode(), name
    assert not ApiToken.objects.exists()


def test_the_number_of_active_tokens_is_limited(client, user, settings, monkeypatch):
    monkeypatch.setattr(services, "MAX_ACTIVE_TOKENS", 2)
    client.force_login(user)
    assert client.post("/accounts/tokens/", {"name": "one"}).status_code == 201
    assert client.post("/accounts/tokens/", {"name": "two"}).status_code == 201
    refused = client.post("/accounts/tokens/", {"name": "three"})
    assert refused.status_code == 400 and "already 2 active tokens" in refused.content.decode()
    services.token_revoke(token=ApiToken.objects.get(name="one"), actor=user)
    assert client.post("/accounts/tokens/", {"name": "three"}).status_code == 201


def test_revoking_asks_first_then_the_token_stops_working(client, user):
    token, raw = services.token_create(user=user, name="old laptop")
    client.force_login(user)
    confirm = client.get(f"/accounts/tokens/{token.pk}/revoke/")
    assert confirm.status_code == 200 and b"Revoke token" in confirm.content
    token.refresh_from_db()
    assert token.revoked_at is None  # asking is not revoking
    response = client.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert "Revoked the token “old laptop”" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert b"old laptop" not in client.get("/accounts/tokens/").content
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404  # already revoked


def test_another_persons_token_is_not_found_and_not_listed(client, user, other_user):
    token, raw = services.token_create(user=user, name="alice's")
    client.force_login(other_user)
    assert b"alice&#x27;s" not in client.get("/accounts/tokens/").content
    assert client.get(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_pages_need_sign_in_and_a_csrf_token(client, user):
    assert client.get("/accounts/tokens/").status_code == 302
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post("/accounts/tokens/", {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_creating_and_revoking_are_audited(client, user):
    client.force_login(user)
    client.post("/accounts/tokens/", {"name": "ci"}, REMOTE_ADDR="203.0.113.9")
    token = ApiToken.objects.get()
    client.post(f"/accounts/tokens/{token.pk}/revoke/")
    events = list(AuditEvent.objects.filter(action__startswith="token_").order_by("id"))
    assert [(e.action, e.actor_name, e.object_id) for e in events] == [
        ("token_created", "alice", str(token.pk)),
        ("token_revoked", "alice", str(token.pk)),
    ]
    assert events[0].ip == "203.0.113.9" and events[1].detail["name"] == "ci"


def test_the_admin_creates_through_the_same_service_and_shows_its_rules(admin_client, user, monkeypatch):
    monkeypatch.setattr(services, "MAX_ACTIVE_TOKENS", 1)
    response = admin_client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "ci"})
    assert response.status_code == 200 and b"raw-token" in response.content
    refused = admin_client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "second"})
    assert refused.status_code == 200 and b"already 1 active tokens" in refused.content
    bad = admin_client.post("/admin/core/apitoken/add/", {"user": user.pk, "name": "a\x07b"})
    assert b"control characters" in bad.content
    assert ApiToken.objects.count() == 1


def test_the_token_list_costs_the_same_queries_for_one_token_or_many(client, user):
    client.force_login(user)
    services.token_create(user=user, name="first")
    client.get("/accounts/tokens/")  # warm the session
    with CaptureQueriesContext(connection) as one:
        client.get("/accounts/tokens/")
    for n in range(10):
        services.token_create(user=user, name=f"token {n}")
    with CaptureQueriesContext(connection) as many:
        assert client.get("/accounts/tokens/").content.count("Revoke…".encode()) == 11
    assert len(many) == len(one)
