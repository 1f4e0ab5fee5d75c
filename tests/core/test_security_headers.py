"""Response headers: the Content-Security-Policy on every page, no inline script to need an exception,
no stored copy of what a signed-in user sees, and API docs served from our own static files."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat.models import Conversation
from core.models import ApiToken
from documents import pipeline, services

pytestmark = pytest.mark.django_db

# What the policy must say: scripts only from our own files (no 'unsafe-inline', no 'unsafe-eval').
REQUIRED = ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
            "base-uri 'self'", "frame-ancestors 'none'")
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)


@pytest.fixture
def admin_client(client, user):
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


@pytest.fixture
def pages(user, collection):
    """Every kind of page, with content: a ready document (one passage highlighted) and a conversation."""
    document = services.document_create(owner=user, collection=collection, enqueue=False,
                                      file=SimpleUploadedFile("plan.txt", b"Quarterly plan notes."))
    pipeline.document_ingest(document_id=document.pk)
    chunk = document.chunks.first()
    conversation = Conversation.objects.create(owner=user, collection=collection, title="Plans")
    return [
        reverse("documents:list"),
        reverse("documents:detail", args=[document.pk]) + f"?chunk={chunk.pk}",
        reverse("chat:index") + "?new=1",
        reverse("chat:detail", args=[conversation.pk]),
        reverse("admin:index"),
        reverse("admin:documents_document_changelist"),
        reverse("admin:documents_document_change", args=[document.pk]),
        reverse("admin:documents_collection_add"),
        "/api/v1/docs",
    ]


def policy_of(response) -> str:
    return response.headers.get("Content-Security-Policy", "")


def test_every_page_sends_a_policy_that_runs_no_inline_script(admin_client, pages):
    for url in [*pages, reverse("login")]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        policy = policy_of(response)
        for directive in REQUIRED:
            assert directive in policy, (url, directive, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, url


def test_the_sign_in_page_has_the_policy_too(client):
    response = client.get(reverse("login"))
    assert all(directive in policy_of(response) for directive in REQUIRED)


def test_no_page_has_an_inline_script_event_handler_or_style(admin_client, pages):
    # What the policy would block: the page must not need it (the browser test sees them work).
    for url in pages:
        html = admin_client.get(url).content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html).group(0))
        assert not INLINE_HANDLER.search(html), (url, INLINE_HANDLER.search(html).group(0))
        assert not INLINE_STYLE.search(html), (url, INLINE_STYLE.search(html).group(0))


def test_pages_for_a_signed_in_user_are_never_stored(admin_client, pages):
    for url in pages[:4]:
        cache_control = admin_client.get(url).headers.get("Cache-Control", "")
        assert "no-store" in cache_control and "private" in cache_control, (url, cache_control)


def test_api_answers_for_a_token_are_never_stored(client, user):
    _token, raw = ApiToken.issue(user=user)
    response = client.get("/api/v1/documents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert "no-store" in response.headers.get("Cache-Control", "")


def test_answers_that_do_not_depend_on_the_user_stay_cacheable(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("Cache-Control", "")


def test_the_api_docs_load_swagger_ui_from_our_static_files(client):
    html = client.get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html and "/static/ninja/swagger-ui-init.js" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing from a CDN
    assert '"validatorUrl": null' in html  # no badge image from validator.swagger.io
